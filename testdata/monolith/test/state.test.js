"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { startRedis, startMonolith, Balancer, grantToken, postJson, sleep, isRoomMsg, isKick } = require("./support");

const DEBOUNCE = 400;
let redis;
let mono;
let token;

before(async () => {
	redis = await startRedis();
	mono = await startMonolith(redis.url, { STATE_DEBOUNCE_MS: String(DEBOUNCE) });
	token = await grantToken(mono);
});

after(async () => {
	await mono?.stop();
	await redis?.stop();
});

async function stored(room) {
	const raw = await redis.client.get(`room:${room}`);
	return raw === null ? null : JSON.parse(raw);
}

async function waitStored(room, pred, timeoutMs = 3000) {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const s = await stored(room);
		if (s && pred(s)) {
			return s;
		}
		if (Date.now() > deadline) {
			throw new Error(`room:${room} never matched; last ${JSON.stringify(s)}`);
		}
		await sleep(25);
	}
}

async function join(b, room, client = crypto.randomUUID()) {
	const since = b.mark();
	b.send("join", { room, client, token });
	await b.waitFor(m => m.type === "room_msg" && m.payload.client_id === client && m.payload.payload.action === "you", 3000, since);
	return client;
}

function seek(b, client, value) {
	b.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 4, value } } });
}

async function waitStoredSince(room, pred, timeoutMs = 3000) {
	await waitStored(room, pred, timeoutMs);
	return Date.now();
}

test("debounced state write: written a debounce after the sync of the last change", async () => {
	const b = await Balancer.connect(mono.balancerUrl);
	const t0 = Date.now();
	const { body } = await postJson(mono, "/api/room/generate");
	const room = body.room;
	await b.waitFor(m => m.type === "loaded" && m.payload.room.name === room);
	assert.equal(await stored(room), null, "no state right after creation");
	const s1 = await waitStored(room, () => true);
	assert.ok(Date.now() - t0 >= DEBOUNCE, "written only after the debounce");
	assert.equal(s1.name, room);
	assert.equal(s1.isTemporary, true);
	assert.equal(s1.playbackPosition, 0);
	const ttl = await redis.client.ttl(`room:${room}`);
	assert.ok(ttl > 7100 && ttl <= 7200, `ttl ${ttl}`);

	// A change is written after the 50 ms sync debounce plus the write debounce (the real
	// one restarts the write debounce from the sync, not at the change).
	const client = await join(b, room);
	const sent = Date.now();
	seek(b, client, 42);
	await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 42));
	assert.equal((await stored(room)).playbackPosition, 0);
	const landed = await waitStoredSince(room, s => s.playbackPosition === 42);
	assert.ok(landed - sent >= DEBOUNCE + 50 - 2, `written ${landed - sent} ms after the change`);
	await b.close();
});

test("Commanded unload keeps the pending write: the sync still fires and the write lands after the room is gone", async () => {
	const b = await Balancer.connect(mono.balancerUrl);
	// The unload has to reach the monolith within the 50 ms sync debounce of the change; on a
	// slow machine that can miss, so try a few rooms.
	for (let attempt = 1; ; attempt++) {
		const room = (await postJson(mono, "/api/room/generate")).body.room;
		await b.waitFor(m => m.type === "loaded" && m.payload.room.name === room);
		const client = await join(b, room);
		seek(b, client, 42);
		await waitStored(room, s => s.playbackPosition === 42);

		const sent = Date.now();
		seek(b, client, 99);
		await b.waitFor(isRoomMsg(room, p => p.payload.action === "event" && p.payload.request.type === 4 && p.payload.request.value === 99));
		const since = b.mark();
		b.send("unload", { room: room.toUpperCase() });
		const unloaded = await b.waitFor(m => m.type === "unloaded", 3000, since);
		assert.deepEqual(unloaded.payload, { name: room, reason: "Commanded" });
		const unloadedIdx = b.msgs.indexOf(unloaded);
		const kickIdx = b.msgs.findIndex((m, i) => i >= since && isKick(client)(m));
		assert.ok(kickIdx !== -1 && kickIdx < unloadedIdx, "kick precedes unloaded");
		assert.equal(b.msgs[kickIdx].payload.reason, 1001);
		const syncedBefore = b.msgs.some((m, i) => i < unloadedIdx && isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 99)(m));
		if (syncedBefore && attempt < 5) {
			continue; // the sync beat the unload; no pending sync to observe
		}

		assert.equal((await stored(room)).playbackPosition, 42, "kept, not flushed at the unload");
		const probe = await Balancer.connect(mono.balancerUrl);
		assert.ok(!probe.initialGossip.payload.rooms.some(r => r.room.name === room), "gone from the room manager");
		await probe.close();
		// The pending sync fired after the unload, (re)started the write debounce, and the
		// write lands with the unloaded instance's state.
		const landed = await waitStoredSince(room, s => s.playbackPosition === 99, DEBOUNCE + 2000);
		assert.ok(landed - sent >= DEBOUNCE + 50 - 2, `written ${landed - sent} ms after the change`);
		const ttl = await redis.client.ttl(`room:${room}`);
		assert.ok(ttl > 7100 && ttl <= 7200, `ttl ${ttl}`);
		// Its broadcast reached nobody: the member had been kicked.
		assert.equal(b.msgs.slice(unloadedIdx).filter(isRoomMsg(room)).length, 0);

		// Reload from Redis with the exact casing: a new instance with the late-written state.
		const since2 = b.mark();
		b.send("load", { room });
		const loaded2 = await b.waitFor(m => m.type === "loaded", 3000, since2);
		assert.equal(loaded2.payload.room.name, room);
		const c2 = crypto.randomUUID();
		b.send("join", { room, client: c2, token });
		const sync = await b.waitFor(m => m.type === "room_msg" && m.payload.client_id === c2 && m.payload.payload.action === "sync");
		assert.equal(sync.payload.payload.playbackPosition, 99);
		break;
	}
	await b.close();
});

test("a temporary room unloaded with its state in Redis cannot be loaded under another casing", async () => {
	const b = await Balancer.connect(mono.balancerUrl);
	const created = await postJson(mono, "/api/room/create", { name: "ProbeRoom" });
	assert.equal(created.status, 200);
	await b.waitFor(m => m.type === "loaded" && m.payload.room.name === "ProbeRoom");
	await waitStored("ProbeRoom", () => true);
	b.send("unload", { room: "proberoom" });
	await b.waitFor(m => m.type === "unloaded" && m.payload.name === "ProbeRoom");
	const client = crypto.randomUUID();
	b.send("join", { room: "proberoom", client, token });
	assert.equal((await b.waitFor(isKick(client))).payload.reason, 4002);
	await b.close();
});
