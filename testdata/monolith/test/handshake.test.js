"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const WebSocket = require("ws");
const { startRedis, startMonolith, Balancer, sleep } = require("./support");

let redis;
let mono;

before(async () => {
	redis = await startRedis();
	mono = await startMonolith(redis.url, { INIT_TIMEOUT_MS: "600", GOSSIP_INTERVAL_MS: "700", BALANCING_REGION: "ewr" });
	await redis.client.hSet("refdb:rooms", "prelude", JSON.stringify({ name: "Prelude", title: "first" }));
	await redis.client.hSet("refdb:rooms", "twin", JSON.stringify({ name: "Twin" }));
	await redis.client.hSet("refdb:rooms", "alive", JSON.stringify({ name: "Alive" }));
});

after(async () => {
	await mono?.stop();
	await redis?.stop();
});

test("HTTP status and 426 on the balancer port", async () => {
	const res = await fetch(`${mono.httpUrl}/api/status`);
	assert.deepEqual(await res.json(), { status: "ok" });
	const plain = await fetch(`http://${mono.balancer}/`);
	assert.equal(plain.status, 426);
});

test("init on accept, messages before the balancer's init are dropped, gossip after init", async () => {
	const b = new Balancer(`${mono.balancerUrl}some/path?x=1`);
	await b.opened;
	const init = await b.waitFor(m => m.type === "init");
	assert.deepEqual(init, { type: "init", payload: { port: mono.httpPort, region: "ewr", id: mono.id } });
	assert.deepEqual(Object.keys(init.payload), ["port", "region", "id"]);

	b.send("load", { room: "Prelude" });
	await sleep(200);
	b.send("init", { id: b.id });
	const gossip = await b.waitFor(m => m.type === "gossip");
	assert.deepEqual(gossip, { type: "gossip", payload: { rooms: [] } }, "the pre-init load must have been dropped");
	assert.equal(b.msgs.filter(m => m.type === "loaded").length, 0);

	b.send("load", { room: "prelude" });
	const loaded = await b.waitFor(m => m.type === "loaded");
	assert.equal(loaded.payload.room.name, "Prelude");
	assert.equal(loaded.payload.room.title, "first");
	assert.equal(loaded.payload.room.users, 0);
	assert.equal(loaded.payload.room.currentSource, null);
	assert.ok(Number.isInteger(loaded.payload.load_epoch) && loaded.payload.load_epoch >= 1);

	// Already loaded: no repeat `loaded`. Unknown room: silence.
	b.send("load", { room: "PRELUDE" });
	b.send("load", { room: "nosuchroom" });
	assert.deepEqual(await b.collect(m => m.type === "loaded", 300), []);

	// Periodic gossip lists the room.
	const periodic = await b.waitFor(m => m.type === "gossip" && m.payload.rooms.length > 0, 2000);
	assert.equal(periodic.payload.rooms[0].room.name, "Prelude");
	assert.equal(periodic.payload.rooms[0].load_epoch, loaded.payload.load_epoch);
	await b.close();
});

test("no init within INIT_TIMEOUT_MS closes with 1002", async () => {
	const started = Date.now();
	const ws = new WebSocket(mono.balancerUrl);
	const closed = await new Promise(resolve => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
	assert.equal(closed.code, 1002);
	assert.equal(closed.reason, "Balancer did not send init message");
	assert.ok(Date.now() - started >= 500);
});

test("invalid messages are logged and dropped, the link stays open", async () => {
	const b = await Balancer.connect(mono.balancerUrl);
	b.sendRaw("not json");
	b.sendRaw("42");
	b.sendRaw("null");
	b.send(5, {});
	b.send("load", null);
	b.send("load", { room: 7 });
	b.send("join", { room: "Alive", client: 1, token: "x" });
	b.send("client_msg", { client_id: "c", payload: "string" });
	b.send("whatever", {});
	b.sendRaw(JSON.stringify({ type: "load" }));
	await sleep(200);
	b.send("load", { room: "Alive" });
	const loaded = await b.waitFor(m => m.type === "loaded" && m.payload.room.name === "Alive");
	assert.ok(loaded);
	assert.equal(b.msgs.filter(m => m.type === "kick").length, 0);
	await b.close();
});

test("two concurrent loads create duplicate instances (§7 item 4)", async () => {
	const b = await Balancer.connect(mono.balancerUrl);
	b.send("load", { room: "Twin" });
	b.send("load", { room: "Twin" });
	const l1 = await b.waitFor(m => m.type === "loaded" && m.payload.room.name === "Twin");
	const l2 = await b.waitFor(m => m.type === "loaded" && m.payload.room.name === "Twin");
	assert.equal(l1.payload.load_epoch, l2.payload.load_epoch, "both report the first instance's epoch");
	const g = await b.waitFor(m => m.type === "gossip" && m.payload.rooms.filter(r => r.room.name === "Twin").length === 2, 2000);
	const epochs = g.payload.rooms.filter(r => r.room.name === "Twin").map(r => r.load_epoch);
	assert.notEqual(epochs[0], epochs[1]);

	// An unload removes only the first instance.
	b.send("unload", { room: "twin" });
	await b.waitFor(m => m.type === "unloaded" && m.payload.name === "Twin");
	const g2 = await b.waitFor(m => m.type === "gossip", 2000, b.mark());
	assert.equal(g2.payload.rooms.filter(r => r.room.name === "Twin").length, 1);
	assert.equal(g2.payload.rooms.find(r => r.room.name === "Twin").load_epoch, epochs[1]);
	await b.close();
});
