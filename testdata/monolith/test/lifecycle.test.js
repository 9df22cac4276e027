"use strict";

// Each test here ends its monolith, so each gets its own.

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { startRedis, startMonolith, Balancer, grantToken, postJson, sleep, isRoomMsg, isKick } = require("./support");

let redis;
const monoliths = [];

before(async () => {
	redis = await startRedis();
});

after(async () => {
	for (const m of monoliths) {
		await m.stop();
	}
	await redis?.stop();
});

async function monolith(env) {
	const m = await startMonolith(redis.url, env);
	monoliths.push(m);
	return m;
}

async function join(b, room, token) {
	const client = crypto.randomUUID();
	b.send("join", { room, client, token });
	await b.waitFor(m => m.type === "room_msg" && m.payload.client_id === client && m.payload.payload.action === "you");
	return client;
}

test("unload of a room that is not loaded kills the process", async () => {
	const mono = await monolith();
	const b = await Balancer.connect(mono.balancerUrl);
	b.send("unload", { room: "neverloaded" });
	const exit = await Promise.race([mono.exited, sleep(5000).then(() => "still running")]);
	assert.notEqual(exit, "still running");
	assert.notEqual(exit.code, 0);
	assert.match(mono.stderr, /Room not found: neverloaded/);
	const closed = await b.closed;
	assert.notEqual(closed.code, 1001);
});

test("keepalive: an idle room is reaped with its Redis state, a room with users is kept", async () => {
	const mono = await monolith({ ROOM_UNLOAD_AFTER: "2", KEEPALIVE_CHECK_MS: "100", STATE_DEBOUNCE_MS: "100" });
	const token = await grantToken(mono);
	const b = await Balancer.connect(mono.balancerUrl);
	const idle = (await postJson(mono, "/api/room/generate")).body.room;
	const busy = (await postJson(mono, "/api/room/generate")).body.room;
	const client = await join(b, busy, token);
	await sleep(300);
	assert.ok(await redis.client.exists(`room:${idle}`));
	const unloaded = await b.waitFor(m => m.type === "unloaded", 4000);
	assert.deepEqual(unloaded.payload, { name: idle, reason: "Keepalive" });
	assert.equal(await redis.client.exists(`room:${idle}`), 0);
	await sleep(1500);
	assert.equal(b.msgs.filter(m => m.type === "unloaded").length, 1, "the room with a user stays");
	assert.equal(b.msgs.filter(isKick(client)).length, 0);
	await mono.stop();
});

test("SIGTERM: links closed with 1001, then state flushed to Redis, exit 0", async () => {
	const mono = await monolith({ STATE_DEBOUNCE_MS: "60000", SHUTDOWN_DELAY_MS: "300" });
	const token = await grantToken(mono);
	const b = await Balancer.connect(mono.balancerUrl);
	const room = (await postJson(mono, "/api/room/generate")).body.room;
	const client = await join(b, room, token);
	b.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 4, value: 7 } } });
	await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 7));
	assert.equal(await redis.client.exists(`room:${room}`), 0, "write still pending");

	const since = b.mark();
	mono.proc.kill("SIGTERM");
	const closed = await b.closed;
	assert.deepEqual(closed, { code: 1001, reason: "Server shutting down" });
	assert.equal(b.msgs.slice(since).filter(m => m.type === "kick" || m.type === "unloaded").length, 0);
	const exit = await mono.exited;
	assert.equal(exit.code, 0);
	const state = JSON.parse(await redis.client.get(`room:${room}`));
	assert.equal(state.playbackPosition, 7);
	assert.equal(state.name, room);
});
