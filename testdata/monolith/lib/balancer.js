"use strict";

const http = require("node:http");
const WebSocket = require("ws");
const log = require("./log");

/** One accepted balancer WebSocket (ott/PROTOCOL.md §2). */
class BalancerConnection {
	constructor(ws, remote) {
		this.ws = ws;
		this.remote = remote;
		/** the id from the balancer's own `init`; null until then */
		this.balancerId = null;
		this.initTimer = null;
	}

	get initialised() {
		return this.balancerId !== null;
	}

	send(msg) {
		if (this.ws.readyState === WebSocket.OPEN) {
			this.ws.send(JSON.stringify(msg));
		}
	}
}

/**
 * Shallow validation as in §2.1. `typeof payload === "object"` is the real check, so `null`
 * and arrays pass the envelope test; a null payload then fails the field checks here.
 */
function validate(msg) {
	if (typeof msg !== "object" || msg === null || typeof msg.type !== "string" || typeof msg.payload !== "object") {
		return "bad envelope";
	}
	const p = msg.payload ?? {};
	const str = (...fields) => {
		for (const f of fields) {
			if (typeof p[f] !== "string") {
				return `${msg.type}: ${f} must be a string`;
			}
		}
		return null;
	};
	switch (msg.type) {
		case "init": return str("id");
		case "load": return str("room");
		case "unload": return str("room");
		case "join": return str("room", "client");
		case "leave": return str("client");
		case "client_msg":
			return str("client_id") ?? (typeof p.payload === "object" ? null : "client_msg: payload must be an object");
		default: return `unknown type ${JSON.stringify(msg.type)}`;
	}
}

class BalancerManager {
	constructor(ctx) {
		this.ctx = ctx;
		/** every open connection, in accept order (which decides id collisions, §7 item 6) */
		this.connections = [];
		this.server = null;
		this.wss = null;
	}

	listen(host, port) {
		// Our own HTTP server (rather than ws's built-in one) so that shutdown can stop
		// accepting without ws terminating the open links.
		this.server = http.createServer((req, res) => {
			const body = http.STATUS_CODES[426];
			res.writeHead(426, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) });
			res.end(body);
		});
		this.wss = new WebSocket.Server({ server: this.server });
		this.wss.on("connection", (ws, req) => this.accept(ws, req));
		return new Promise((resolve, reject) => {
			this.server.once("error", reject);
			this.server.listen(port, host, () => resolve(this.server.address().port));
		});
	}

	accept(ws, req) {
		const conn = new BalancerConnection(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`);
		this.connections.push(conn);
		log.info(`balancer link from ${conn.remote} (path ${req.url} ignored)`);
		const { config } = this.ctx;
		conn.send({ type: "init", payload: { port: this.ctx.httpPort, region: config.region, id: this.ctx.id } });
		conn.initTimer = setTimeout(() => {
			if (!conn.initialised) {
				log.warn(`balancer ${conn.remote} did not send init`);
				ws.close(1002, "Balancer did not send init message");
			}
		}, config.initTimeoutMs);
		ws.on("message", data => this.onMessage(conn, data));
		ws.on("close", (code, reason) => {
			clearTimeout(conn.initTimer);
			const i = this.connections.indexOf(conn);
			if (i !== -1) {
				this.connections.splice(i, 1);
			}
			log.info(`balancer link ${conn.remote} (${conn.balancerId}) closed: ${code} ${reason}`);
			this.ctx.clients.connectionClosed(conn);
		});
		ws.on("error", e => log.warn(`balancer link ${conn.remote}: ${e.message}`));
	}

	onMessage(conn, data) {
		let msg;
		try {
			msg = JSON.parse(data.toString());
		} catch (e) {
			log.warn(`balancer ${conn.remote}: dropping non-JSON message`);
			return;
		}
		if (!conn.initialised && !(msg && msg.type === "init")) {
			// Before the balancer's init only an init handler exists.
			log.debug(`balancer ${conn.remote}: dropping ${msg && msg.type} before init`);
			return;
		}
		const problem = validate(msg);
		if (problem) {
			log.warn(`balancer ${conn.remote}: dropping invalid message: ${problem}`);
			return;
		}
		const p = msg.payload;
		switch (msg.type) {
			case "init": {
				const first = !conn.initialised;
				conn.balancerId = p.id;
				clearTimeout(conn.initTimer);
				if (first) {
					log.info(`balancer ${conn.remote} is ${p.id}`);
					conn.send({ type: "gossip", payload: this.ctx.rooms.gossip() });
				}
				return;
			}
			case "load":
				this.ctx.rooms.getRoom(p.room).catch(e => {
					// A load of an unknown room gets no answer at all (§3.2).
					log.info(`load ${p.room}: ${e.message}`);
				});
				return;
			case "unload":
				// Deliberately not caught: unloading a room that is not loaded rejects, nothing
				// handles it, and Node's default for an unhandled rejection ends the process,
				// exactly the real monolith's crash (§3.6, §7 item 5).
				this.ctx.rooms.unloadByName(p.room, "Commanded");
				return;
			case "join":
				this.ctx.clients.join(conn, p);
				return;
			case "leave":
				this.ctx.clients.leave(p);
				return;
			case "client_msg":
				this.ctx.clients.clientMessage(p);
				return;
		}
	}

	firstById(id) {
		return this.connections.find(c => c.initialised && c.balancerId === id);
	}

	broadcastInitialised(msg) {
		for (const conn of this.connections) {
			if (conn.initialised) {
				conn.send(msg);
			}
		}
	}

	gossip() {
		this.broadcastInitialised({ type: "gossip", payload: this.ctx.rooms.gossip() });
	}

	/** First step of a graceful shutdown (§1.5): no kick, no unloaded, just close. */
	closeAll(code, reason) {
		if (this.server) {
			this.server.close();
		}
		for (const conn of this.connections) {
			clearTimeout(conn.initTimer);
			conn.ws.close(code, reason);
		}
	}
}

module.exports = { BalancerManager, validate };
