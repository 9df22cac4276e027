"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { startRedis, startMonolith, Balancer, grantToken, postJson, sleep, isRoomMsg, isKick } = require("./support");

let redis;
let mono;
let token;

before(async () => {
	redis = await startRedis();
	mono = await startMonolith(redis.url);
	token = await grantToken(mono);
});

after(async () => {
	await mono?.stop();
	await redis?.stop();
});

const uuid = () => crypto.randomUUID();

async function join(b, room, client = uuid()) {
	const since = b.mark();
	b.send("join", { room, client, token });
	await b.waitFor(m => m.type === "room_msg" && m.payload.client_id === client && m.payload.payload.action === "you", 3000, since);
	return client;
}

test("auth grant stores an anonymous session", async () => {
	const res = await fetch(`${mono.httpUrl}/api/auth/grant`);
	const { token: t } = await res.json();
	assert.equal(t.length, 684);
	assert.match(res.headers.get("set-cookie"), /^token=/);
	const session = JSON.parse(await redis.client.get(`auth:${t}`));
	assert.equal(session.isLoggedIn, false);
	assert.match(session.username, /^[a-z]+_[a-z]+_[a-z]+$/);
	const ttl = await redis.client.ttl(`auth:${t}`);
	assert.ok(ttl > 14 * 24 * 3600 - 10);
});

test("room create rules and listing", async () => {
	for (const name of ["ab", "x".repeat(33), "bad name", "list", "create", "generate"]) {
		const r = await postJson(mono, "/api/room/create", { name });
		assert.equal(r.status, 400, name);
		assert.equal(r.body.success, false);
	}
	// Reserved-name check is case-sensitive, like the real one.
	assert.equal((await postJson(mono, "/api/room/create", { name: "List", visibility: "unlisted" })).status, 200);
	assert.equal((await postJson(mono, "/api/room/create", { name: "list2", visibility: "bogus" })).status, 400);
	const list = await (await fetch(`${mono.httpUrl}/api/room/list`)).json();
	assert.ok(!list.some(r => r.name === "List"), "unlisted rooms are not listed");
	const missing = await fetch(`${mono.httpUrl}/api/room/nosuchroom`);
	assert.equal(missing.status, 404);
});

test("join: loaded first, then the six-message sequence with canonical casing", async () => {
	const a = await Balancer.connect(mono.balancerUrl);
	const created = await postJson(mono, "/api/room/create", { name: "MovieNight", title: "Friday films", isTemporary: false });
	assert.deepEqual(created, { status: 200, body: { success: true } });
	const dup = await postJson(mono, "/api/room/create", { name: "movienight" });
	assert.equal(dup.status, 400);
	assert.equal(dup.body.error.name, "RoomNameTakenException");

	const loaded = await a.waitFor(m => m.type === "loaded");
	assert.deepEqual(loaded.payload.room, {
		name: "MovieNight", title: "Friday films", description: "", isTemporary: false,
		visibility: "public", queueMode: "manual", currentSource: null, users: 0,
	});
	await sleep(100); // let the post-load sync go by; nobody is in the room to get it

	const client = uuid();
	const since = a.mark();
	a.send("join", { room: "movienight", client, token });
	await a.waitFor(m => m.type === "room_msg" && m.payload.payload.action === "you", 3000, since);
	const seq = a.msgs.slice(since).filter(m => m.type === "room_msg");
	assert.equal(seq.length, 6, JSON.stringify(seq));
	for (const m of seq) {
		assert.equal(m.payload.room, "MovieNight");
	}
	const [sync, event, posSync, userUpdate, userInit, you] = seq.map(m => m.payload);
	assert.equal(sync.client_id, client);
	assert.equal(sync.payload.action, "sync");
	assert.equal(sync.payload.name, "MovieNight");
	for (const f of ["queue", "isPlaying", "playbackPosition", "grants", "hasOwner", "voteCounts", "enableVoteSkip", "votesToSkip"]) {
		assert.ok(f in sync.payload, f);
	}
	assert.ok(!("client_id" in event));
	assert.equal(event.payload.action, "event");
	assert.equal(event.payload.request.type, 0);
	assert.equal(event.payload.user.id, client);
	assert.deepEqual(event.payload.additional, {});
	assert.ok(!("client_id" in posSync));
	assert.deepEqual(Object.keys(posSync.payload), ["action", "playbackPosition"]);
	assert.ok(!("client_id" in userUpdate));
	assert.equal(userUpdate.payload.update.kind, "update");
	assert.deepEqual(Object.keys(userUpdate.payload.update.value), ["id", "name", "isLoggedIn", "status", "role"]);
	assert.equal(userUpdate.payload.update.value.status, "none");
	assert.equal(userUpdate.payload.update.value.role, 0);
	assert.equal(userInit.client_id, client);
	assert.equal(userInit.payload.update.kind, "init");
	assert.equal(userInit.payload.update.value.length, 1);
	assert.equal(you.client_id, client);
	assert.deepEqual(you.payload, { action: "you", info: { id: client } });

	const info = await (await fetch(`${mono.httpUrl}/api/room/MOVIENIGHT`)).json();
	assert.equal(info.name, "MovieNight");
	assert.equal(info.users.length, 1);
	await a.close();
});

test("join kicks: 4004 without or with an unknown token, 4002 for an unknown room", async () => {
	const a = await Balancer.connect(mono.balancerUrl);
	const c1 = uuid(), c2 = uuid(), c3 = uuid(), c4 = uuid();
	a.send("join", { room: "MovieNight", client: c1 });
	a.send("join", { room: "MovieNight", client: c2, token: "" });
	a.send("join", { room: "MovieNight", client: c3, token: "bm9wZQ==" });
	a.send("join", { room: "nosuchroom", client: c4, token });
	assert.equal((await a.waitFor(isKick(c1))).payload.reason, 4004);
	assert.equal((await a.waitFor(isKick(c2))).payload.reason, 4004);
	assert.equal((await a.waitFor(isKick(c3))).payload.reason, 4004);
	assert.deepEqual(await a.waitFor(isKick(c4)), { type: "kick", payload: { client_id: c4, reason: 4002 } });
	assert.equal(a.msgs.filter(m => m.type === "room_msg").length, 0);
	await a.close();
});

test("broadcasts: one room_msg per balancer with members; leave, kickme and link close", async () => {
	const { body } = await postJson(mono, "/api/room/generate");
	assert.equal(body.success, true);
	const room = body.room;
	assert.match(room, /^[0-9a-f-]{36}$/);

	const a = await Balancer.connect(mono.balancerUrl);
	const b = await Balancer.connect(mono.balancerUrl);
	const c = await Balancer.connect(mono.balancerUrl);
	const a1 = await join(a, room);
	const a2 = await join(a, room);
	const b1 = await join(b, room);
	await sleep(100);
	const sa = a.mark(), sb = b.mark(), sc = c.mark();

	a.send("client_msg", { client_id: a1, payload: { action: "req", request: { type: 11, text: "hi all" } } });
	const chats = pred => m => m.type === "room_msg" && m.payload.payload.action === "chat" && pred(m);
	await a.waitFor(chats(() => true), 3000, sa);
	await sleep(200);
	const aChats = a.msgs.slice(sa).filter(chats(() => true));
	const bChats = b.msgs.slice(sb).filter(chats(() => true));
	assert.equal(aChats.length, 1);
	assert.equal(bChats.length, 1);
	assert.equal(c.msgs.slice(sc).filter(m => m.type === "room_msg").length, 0);
	assert.deepEqual(Object.keys(aChats[0].payload), ["room", "payload"], "broadcasts omit client_id");
	assert.equal(aChats[0].payload.payload.text, "hi all");
	assert.equal(aChats[0].payload.payload.from.id, a1);

	// status -> user update broadcast
	a.send("client_msg", { client_id: a2, payload: { action: "status", status: "ready" } });
	const upd = await b.waitFor(isRoomMsg(room, p => p.payload.action === "user" && p.payload.update.value.id === a2));
	assert.equal(upd.payload.payload.update.value.status, "ready");

	// queue add + seek + playback -> events and syncs
	a.send("client_msg", { client_id: a1, payload: { action: "req", request: { type: 5, video: { service: "youtube", id: "abc123XYZ00", length: 100 } } } });
	const qsync = await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.currentSource));
	assert.equal(qsync.payload.payload.currentSource.id, "abc123XYZ00");
	a.send("client_msg", { client_id: a1, payload: { action: "req", request: { type: 4, value: 30 } } });
	const seekEvent = await b.waitFor(isRoomMsg(room, p => p.payload.action === "event" && p.payload.request.type === 4));
	assert.equal(seekEvent.payload.payload.request.value, 30);
	const seekSync = await b.waitFor(isRoomMsg(room, p => p.payload.action === "sync" && p.payload.playbackPosition === 30));
	assert.ok(seekSync);

	// leave: the other balancer hears event type 1 then user remove
	const sb2 = b.mark();
	a.send("leave", { client: a2 });
	const leaveEv = await b.waitFor(isRoomMsg(room, p => p.payload.action === "event" && p.payload.request.type === 1), 3000, sb2);
	assert.equal(leaveEv.payload.payload.user.id, a2);
	const rm = await b.waitFor(isRoomMsg(room, p => p.payload.action === "user"), 3000, sb2);
	assert.deepEqual(rm.payload.payload.update, { kind: "remove", value: a2 });
	// unknown client: nothing
	a.send("leave", { client: a2 });

	// kickme with an unvalidated code, default 4000; null payload -> 4000
	a.send("client_msg", { client_id: a1, payload: { action: "kickme", reason: 70000 } });
	assert.equal((await a.waitFor(isKick(a1))).payload.reason, 70000);
	await b.waitFor(isRoomMsg(room, p => p.payload.action === "user" && p.payload.update.kind === "remove" && p.payload.update.value === a1));
	const a3 = await join(a, room);
	a.send("client_msg", { client_id: a3, payload: { action: "kickme" } });
	assert.equal((await a.waitFor(isKick(a3))).payload.reason, 4000);
	const a4 = await join(a, room);
	a.send("client_msg", { client_id: a4, payload: null });
	assert.equal((await a.waitFor(isKick(a4))).payload.reason, 4000);

	// a link closing makes its clients leave
	const a5 = await join(a, room);
	const sb3 = b.mark();
	a.ws.terminate();
	const gone = await b.waitFor(isRoomMsg(room, p => p.payload.action === "user" && p.payload.update.kind === "remove"), 3000, sb3);
	assert.equal(gone.payload.payload.update.value, a5);
	const users = (await (await fetch(`${mono.httpUrl}/api/room/${room}`)).json()).users;
	assert.deepEqual(users.map(u => u.id), [b1]);
	await b.close();
	await c.close();
});

test("a join loads an unloaded room: loaded precedes the first room_msg", async () => {
	await redis.client.hSet("refdb:rooms", "lazyroom", JSON.stringify({ name: "LazyRoom", visibility: "unlisted" }));
	const a = await Balancer.connect(mono.balancerUrl);
	const client = await join(a, "LAZYROOM");
	const firstLoaded = a.msgs.findIndex(m => m.type === "loaded" && m.payload.room.name === "LazyRoom");
	const firstMsg = a.msgs.findIndex(m => m.type === "room_msg" && m.payload.room === "LazyRoom");
	assert.ok(firstLoaded !== -1 && firstLoaded < firstMsg);
	assert.equal(a.msgs[firstMsg].payload.client_id, client);
	await a.close();
});

test("balancer id collision: broadcasts go to the first connection with that id", async () => {
	const { body } = await postJson(mono, "/api/room/generate");
	const room = body.room;
	const first = await Balancer.connect(mono.balancerUrl);
	const second = new Balancer(mono.balancerUrl);
	second.id = first.id;
	await second.opened;
	await second.waitFor(m => m.type === "init");
	second.send("init", { id: first.id });
	await second.waitFor(m => m.type === "gossip");
	const client = await join(second, room);
	const s1 = first.mark();
	second.send("client_msg", { client_id: client, payload: { action: "req", request: { type: 11, text: "where am i" } } });
	await first.waitFor(isRoomMsg(room, p => p.payload.action === "chat"), 3000, s1);
	await sleep(150);
	assert.equal(second.msgs.filter(m => m.type === "room_msg" && m.payload.payload.action === "chat").length, 0);
	await first.close();
	await second.close();
});
