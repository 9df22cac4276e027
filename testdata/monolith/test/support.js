"use strict";

// Test harness: a private redis-server, monolith processes, and a hand-written balancer.

const { spawn } = require("node:child_process");
const net = require("node:net");
const path = require("node:path");
const crypto = require("node:crypto");
const WebSocket = require("ws");
const { createClient } = require("redis");

const SERVER = path.join(__dirname, "..", "server.js");

function freePort() {
	return new Promise((resolve, reject) => {
		const srv = net.createServer();
		srv.once("error", reject);
		srv.listen(0, "127.0.0.1", () => {
			const { port } = srv.address();
			srv.close(() => resolve(port));
		});
	});
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function startRedis() {
	const bin = process.env.REDIS_SERVER || "redis-server";
	for (let attempt = 0; ; attempt++) {
		const port = await freePort();
		const proc = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
			stdio: ["ignore", "pipe", "pipe"],
		});
		let out = "";
		proc.stdout.on("data", d => { out += d; });
		proc.stderr.on("data", d => { out += d; });
		const exited = new Promise(r => proc.once("exit", r));
		const ready = await Promise.race([
			(async () => {
				for (let i = 0; i < 100; i++) {
					if (out.includes("Ready to accept connections")) {
						return true;
					}
					await sleep(50);
				}
				return false;
			})(),
			exited.then(() => false),
		]);
		if (!ready) {
			proc.kill("SIGKILL");
			if (attempt < 3) {
				continue; // port raced away; try another
			}
			throw new Error(`redis-server did not start:\n${out}`);
		}
		const url = `redis://127.0.0.1:${port}`;
		const client = createClient({ url });
		client.on("error", () => {});
		await client.connect();
		return {
			url,
			client,
			async stop() {
				await client.quit().catch(() => {});
				proc.kill("SIGKILL");
				await exited;
			},
		};
	}
}

/**
 * Starts server.js on ephemeral ports and resolves once it printed its ready line.
 * MONOLITH_LOG_LEVEL=debug shows its logs on the test's stderr.
 */
async function startMonolith(redisUrl, env = {}) {
	const proc = spawn(process.execPath, [SERVER], {
		env: {
			PATH: process.env.PATH,
			REDIS_URL: redisUrl,
			BALANCING_ENABLED: "true",
			PORT: "0",
			BALANCING_PORT: "0",
			LOG_LEVEL: process.env.MONOLITH_LOG_LEVEL || "silent",
			...env,
		},
		stdio: ["ignore", "pipe", "pipe"],
	});
	let stderr = "";
	proc.stderr.on("data", d => {
		stderr += d;
		if (process.env.MONOLITH_LOG_LEVEL) {
			process.stderr.write(d);
		}
	});
	const exited = new Promise(r => proc.once("exit", (code, signal) => r({ code, signal })));
	let stdout = "";
	const ready = await new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`monolith not ready in 10s:\n${stdout}\n${stderr}`)), 10000);
		proc.stdout.on("data", d => {
			stdout += d;
			const m = /monolith ready http=(\S+) balancer=(\S+) id=(\S+)/.exec(stdout);
			if (m) {
				clearTimeout(timer);
				resolve({ http: m[1], balancer: m[2], id: m[3] });
			}
		});
		exited.then(({ code, signal }) => {
			clearTimeout(timer);
			reject(new Error(`monolith exited (${code ?? signal}) before ready:\n${stderr}`));
		});
	});
	return {
		...ready,
		proc,
		exited,
		httpUrl: `http://${ready.http}`,
		balancerUrl: `ws://${ready.balancer}/`,
		httpPort: Number(ready.http.split(":").pop()),
		get stderr() { return stderr; },
		async stop() {
			if (proc.exitCode === null && proc.signalCode === null) {
				proc.kill("SIGKILL");
			}
			await exited;
		},
	};
}

/** A minimal balancer: records every M2B message and lets tests wait for them in order. */
class Balancer {
	constructor(url) {
		this.id = crypto.randomUUID();
		this.msgs = [];
		this.taken = new Set();
		this.waiters = [];
		this.ws = new WebSocket(url);
		this.opened = new Promise((resolve, reject) => {
			this.ws.once("open", resolve);
			this.ws.once("error", reject);
		});
		this.closed = new Promise(resolve => {
			this.ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }));
		});
		this.ws.on("error", () => {});
		this.ws.on("message", data => {
			this.msgs.push(JSON.parse(data.toString()));
			this.wake();
		});
	}

	/** Connects and completes the handshake; resolves with the monolith's init. */
	static async connect(url) {
		const b = new Balancer(url);
		await b.opened;
		b.monolithInit = await b.waitFor(m => m.type === "init");
		b.send("init", { id: b.id });
		b.initialGossip = await b.waitFor(m => m.type === "gossip");
		return b;
	}

	send(type, payload) {
		this.ws.send(JSON.stringify({ type, payload }));
	}

	sendRaw(text) {
		this.ws.send(text);
	}

	wake() {
		for (const w of [...this.waiters]) {
			const m = this.take(w.pred, w.since);
			if (m) {
				this.waiters.splice(this.waiters.indexOf(w), 1);
				clearTimeout(w.timer);
				w.resolve(m);
			}
		}
	}

	/** Position to pass as `since` to ignore everything received so far. */
	mark() {
		return this.msgs.length;
	}

	take(pred, since = 0) {
		for (let i = since; i < this.msgs.length; i++) {
			if (!this.taken.has(i) && pred(this.msgs[i])) {
				this.taken.add(i);
				return this.msgs[i];
			}
		}
		return null;
	}

	/** The earliest not yet consumed message matching pred (received at or after `since`). */
	waitFor(pred, timeoutMs = 3000, since = 0) {
		const m = this.take(pred, since);
		if (m) {
			return Promise.resolve(m);
		}
		return new Promise((resolve, reject) => {
			const w = { pred, resolve, since };
			w.timer = setTimeout(() => {
				this.waiters.splice(this.waiters.indexOf(w), 1);
				reject(new Error(`timed out waiting for a message; got:\n${this.msgs.map(x => JSON.stringify(x)).join("\n")}`));
			}, timeoutMs);
			this.waiters.push(w);
		});
	}

	/** Unconsumed messages matching pred, after waiting ms. */
	async collect(pred, ms) {
		await sleep(ms);
		const out = [];
		let m;
		while ((m = this.take(pred))) {
			out.push(m);
		}
		return out;
	}

	close() {
		this.ws.close();
		return this.closed;
	}
}

async function grantToken(mono) {
	const res = await fetch(`${mono.httpUrl}/api/auth/grant`);
	const body = await res.json();
	return body.token;
}

async function postJson(mono, path, body) {
	const res = await fetch(`${mono.httpUrl}${path}`, {
		method: "POST",
		headers: { "Content-Type": "application/json" },
		body: JSON.stringify(body ?? {}),
	});
	return { status: res.status, body: await res.json() };
}

const isRoomMsg = (room, pred = () => true) => m => m.type === "room_msg" && m.payload.room === room && pred(m.payload);
const isKick = clientId => m => m.type === "kick" && m.payload.client_id === clientId;

module.exports = { startRedis, startMonolith, Balancer, grantToken, postJson, sleep, isRoomMsg, isKick };
