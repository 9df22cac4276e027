"use strict";

// The 1-second room tick (the real Room.update() then sync()): the queue moves into an empty
// player there, not at the add, and a playing video past its end makes way there.

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { startRedis, startMonolith, Balancer, grantToken, postJson, sleep, isRoomMsg } = require("./support");

const DEBOUNCE = 300;
let redis;
let ticking;
let still;

before(async () => {
	redis = await startRedis();
	ticking = await startMonolith(redis.url, { STATE_DEBOUNCE_MS: String(DEBOUNCE) });
	// No tick within a test's time at all.
	still = await startMonolith(redis.url, { STATE_DEBOUNCE_MS: String(DEBOUNCE), KEEPALIVE_CHECK_MS: "600000" });
});

after(async () => {
	await ticking?.stop();
	await still?.stop();
	await redis?.stop();
});

async function room(mono) {
	const b = await Balancer.connect(mono.balancerUrl);
	const token = await grantToken(mono);
	const name = (await postJson(mono, "/api/room/generate")).body.room;
	const client = crypto.randomUUID();
	b.send("join", { room: name, client, token });
	await b.waitFor(m => m.type === "room_msg" && m.payload.client_id === client && m.payload.payload.action === "you");
	await sleep(100); // the load's sync goes by
	// Only what comes after the join matters here.
	for (let i = 0; i < b.msgs.length; i++) {
		b.taken.add(i);
	}
	return { b, name, client, since: b.mark() };
}

function req(b, client, request) {
	b.send("client_msg", { client_id: client, payload: { action: "req", request } });
}

const isSync = (name, pred) => isRoomMsg(name, p => p.payload.action === "sync" && pred(p.payload));

test("add only enqueues: without a tick the player stays empty", async () => {
	const { b, name, client, since } = await room(still);
	const video = { service: "direct", id: "https://example.com/still.mp4" };
	req(b, client, { type: 5, video });
	const ev = await b.waitFor(isRoomMsg(name, p => p.payload.action === "event" && p.payload.request.type === 5));
	assert.deepEqual(ev.payload.payload.additional, { videos: [video] });
	const qsync = await b.waitFor(isSync(name, s => "queue" in s));
	assert.deepEqual(qsync.payload.payload.queue, [video]);
	assert.ok(!("currentSource" in qsync.payload.payload), "the add's sync does not carry currentSource");
	await sleep(500);
	assert.equal(b.msgs.slice(since).filter(isSync(name, s => "currentSource" in s)).length, 0);
	const info = await (await fetch(`${still.httpUrl}/api/room/${name}`)).json();
	assert.equal(info.currentSource, null);
	assert.deepEqual(info.queue, [video]);

	// A skip with nothing playing does nothing at all.
	const beforeSkip = b.mark();
	req(b, client, { type: 3 });
	await sleep(300);
	assert.equal(b.msgs.slice(beforeSkip).filter(isRoomMsg(name)).length, 0);
	await b.close();
});

test("add to an empty player: currentSource moves at the next tick, with its own sync and write", async () => {
	const { b, name, client } = await room(ticking);
	const video = { service: "direct", id: "https://example.com/a.mp4", length: 100 };
	const added = Date.now();
	req(b, client, { type: 5, video });
	const qsync = await b.waitFor(isSync(name, s => "queue" in s));
	assert.ok(!("currentSource" in qsync.payload.payload));
	const csync = await b.waitFor(isSync(name, s => "currentSource" in s), 3000);
	const moved = Date.now();
	assert.ok(moved - added < 1500, `moved ${moved - added} ms after the add`);
	assert.notEqual(b.msgs.indexOf(csync), b.msgs.indexOf(qsync), "a sync of its own");
	assert.deepEqual(csync.payload.payload.currentSource, video);
	assert.deepEqual(csync.payload.payload.queue, []);
	assert.equal(csync.payload.payload.playbackPosition, 0);
	assert.equal(csync.payload.payload.playbackSpeed, 1);
	assert.ok(!("isPlaying" in csync.payload.payload), "isPlaying is untouched");

	// The tick's sync restarts the write debounce: the state with currentSource is written a
	// debounce after it.
	let stored = null;
	while (Date.now() - moved < DEBOUNCE + 2000) {
		const raw = await redis.client.get(`room:${name}`);
		stored = raw === null ? null : JSON.parse(raw);
		if (stored && stored.currentSource) {
			break;
		}
		await sleep(10);
	}
	const landed = Date.now();
	assert.deepEqual(stored.currentSource, video);
	assert.deepEqual(stored.queue, []);
	assert.ok(landed - moved >= DEBOUNCE - 20, `written ${landed - moved} ms after the tick's sync`);
	await b.close();
});

test("a playing video without a length ends at the next tick; one with a length plays on", async () => {
	const { b, name, client, since } = await room(ticking);
	const noLength = { service: "direct", id: "https://example.com/nolength.mp4" };
	const withLength = { service: "direct", id: "https://example.com/long.mp4", length: 100 };
	req(b, client, { type: 2, state: true });
	await b.waitFor(isSync(name, s => s.isPlaying === true));
	req(b, client, { type: 5, videos: [noLength, withLength] });

	const first = await b.waitFor(isSync(name, s => s.currentSource && s.currentSource.id === noLength.id), 3000);
	const t1 = Date.now();
	const second = await b.waitFor(isSync(name, s => s.currentSource && s.currentSource.id === withLength.id), 3000);
	const t2 = Date.now();
	assert.ok(t2 - t1 > 600 && t2 - t1 < 1600, `dequeued ${t2 - t1} ms after it started`);
	assert.deepEqual(first.payload.payload.queue, [withLength]);
	assert.deepEqual(second.payload.payload.queue, []);
	assert.ok(second.payload.payload.playbackPosition < 0.1, "playing from 0");
	assert.ok(!("isPlaying" in second.payload.payload), "still playing");

	// The one with a length stays through the next ticks.
	await sleep(1500);
	assert.equal(b.msgs.slice(since).filter(isSync(name, s => "currentSource" in s)).length, 2);

	// Skip with an empty queue: the player empties and stops.
	req(b, client, { type: 3 });
	const ev = await b.waitFor(isRoomMsg(name, p => p.payload.action === "event" && p.payload.request.type === 3));
	assert.deepEqual(ev.payload.payload.additional.video, withLength);
	assert.ok(ev.payload.payload.additional.prevPosition > 1);
	const stop = await b.waitFor(isSync(name, s => "currentSource" in s));
	assert.equal(stop.payload.payload.currentSource, null);
	assert.equal(stop.payload.payload.isPlaying, false);
	assert.equal(stop.payload.payload.playbackPosition, 0);
	assert.deepEqual(stop.payload.payload.videoSegments, []);
	await b.close();
});
