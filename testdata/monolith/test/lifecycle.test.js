"use strict";

// Each test here ends its monolith, so each gets its own, and they run at the same time.

const { describe, test, before, after } = require("node:test");
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

describe("lifecycle", { concurrency: true }, () => {
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

	test("SIGTERM: links closed with 1001, exit 0 after SHUTDOWN_DELAY_MS, pending state never written", async () => {
		const mono = await monolith({ STATE_DEBOUNCE_MS: "1000", SHUTDOWN_DELAY_MS: "300" });
		const token = await grantToken(mono);
		const b = await Balancer.connect(mono.balancerUrl);
		const room = (await postJson(mono, "/api/room/generate")).body.room;
		const client = await join(b, room, token);
		// The creation's write lands; then a change whose write is still pending at the signal.
		for (;;) {
			const raw = await redis.client.get(`room:${room}`);
			if (raw !== null) {
				break;
			}
			await sleep(25);
		}
		b.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 4, value: 7 } } });
		await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 7));

		const since = b.mark();
		const signalled = Date.now();
		mono.proc.kill("SIGTERM");
		const closed = await b.closed;
		assert.deepEqual(closed, { code: 1001, reason: "Server shutting down" });
		assert.equal(b.msgs.slice(since).filter(m => m.type === "kick" || m.type === "unloaded").length, 0);
		const exit = await mono.exited;
		const took = Date.now() - signalled;
		assert.equal(exit.code, 0);
		assert.ok(took >= 300 && took < 1000, `exited ${took} ms after SIGTERM`);
		await sleep(1200); // past the write's due time, had anything survived
		const state = JSON.parse(await redis.client.get(`room:${room}`));
		assert.equal(state.playbackPosition, 0, "the change before SIGTERM is lost");
	});

	test("SIGTERM: a write that falls due during SHUTDOWN_DELAY_MS still lands", async () => {
		const mono = await monolith({ STATE_DEBOUNCE_MS: "200", SHUTDOWN_DELAY_MS: "1000" });
		const token = await grantToken(mono);
		const b = await Balancer.connect(mono.balancerUrl);
		const room = (await postJson(mono, "/api/room/generate")).body.room;
		const client = await join(b, room, token);
		b.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 4, value: 9 } } });
		await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 9));
		mono.proc.kill("SIGTERM");
		assert.equal((await mono.exited).code, 0);
		const state = JSON.parse(await redis.client.get(`room:${room}`));
		assert.equal(state.playbackPosition, 9);
	});

	test("Commanded unload: the pending write lands ~5 s after the last change, with the room gone", async () => {
		const mono = await monolith(); // the real 5 s debounce
		const token = await grantToken(mono);
		const b = await Balancer.connect(mono.balancerUrl);
		const room = (await postJson(mono, "/api/room/generate")).body.room;
		const client = await join(b, room, token);
		const changed = Date.now();
		b.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 4, value: 42 } } });
		await b.waitFor(isRoomMsg(room, p => p.payload.action === "event" && p.payload.request.type === 4));
		b.send("unload", { room });
		await b.waitFor(m => m.type === "unloaded" && m.payload.name === room);
		assert.equal(await redis.client.exists(`room:${room}`), 0, "nothing written at the unload");
		// Not loaded any more, and not loadable either (a temporary room with nothing in Redis yet).
		b.send("load", { room });
		await sleep(300);
		assert.equal(b.msgs.filter(m => m.type === "loaded" && m.payload.room.name === room).length, 1);
		let raw = null;
		while (raw === null && Date.now() - changed < 8000) {
			await sleep(25);
			raw = await redis.client.get(`room:${room}`);
		}
		const landed = Date.now() - changed;
		assert.ok(raw !== null, "the write never landed");
		assert.ok(landed >= 5000 + 50 - 2 && landed < 6500, `landed ${landed} ms after the change`);
		assert.equal(JSON.parse(raw).playbackPosition, 42);
		assert.equal(mono.proc.exitCode, null, "still running");
		await mono.stop();
	});
});
