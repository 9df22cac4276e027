"use strict";

const log = require("./log");
const { KickReason, BadRequest } = require("./room");
const { RoomNotFound } = require("./roommanager");

/**
 * Clients that joined through balancer connections. The real monolith keeps no direct
 * (browser-on-the-HTTP-port) clients in this fixture.
 */
class ClientManager {
	constructor(ctx) {
		this.ctx = ctx;
		/** client id -> client; a repeated id silently replaces the record (no duplicate check, §3.3) */
		this.clients = new Map();
	}

	async session(token) {
		const raw = await this.ctx.redis.get(`auth:${token}`);
		return raw === null ? null : JSON.parse(raw);
	}

	applySession(client, session) {
		client.isLoggedIn = !!session.isLoggedIn;
		client.userId = session.user_id;
		// There is no user table here; a logged-in session may carry a username, else a stand-in.
		client.name = session.username ?? (client.isLoggedIn ? `user${session.user_id}` : "");
	}

	/** B2M `join` (ott/PROTOCOL.md §4.3). */
	join(conn, payload) {
		const client = {
			id: payload.client,
			roomName: payload.room,
			token: payload.token,
			conn,
			room: null,
			name: "",
			isLoggedIn: false,
			userId: undefined,
			status: "none",
			// Messages of one client are handled in order, after its join finished.
			queue: null,
		};
		this.clients.set(client.id, client);
		client.queue = this.doJoin(client).catch(e => {
			log.error(`join of ${client.id} failed: ${e.stack || e}`);
			this.kick(client, KickReason.UNKNOWN);
		});
	}

	isCurrent(client) {
		return this.clients.get(client.id) === client;
	}

	async doJoin(client) {
		if (typeof client.token !== "string" || client.token === "") {
			this.kick(client, KickReason.MISSING_TOKEN);
			return;
		}
		const session = await this.session(client.token);
		if (!this.isCurrent(client)) {
			return;
		}
		if (!session) {
			log.info(`join of ${client.id}: no session for token`);
			this.kick(client, KickReason.MISSING_TOKEN);
			return;
		}
		this.applySession(client, session);
		let room;
		try {
			room = await this.ctx.rooms.getRoom(client.roomName);
		} catch (e) {
			if (e instanceof RoomNotFound) {
				log.info(`join of ${client.id}: room ${client.roomName} not found`);
				this.kick(client, KickReason.ROOM_NOT_FOUND);
				return;
			}
			throw e;
		}
		if (!this.isCurrent(client)) {
			return;
		}
		client.roomName = room.name;
		client.room = room;
		room.join(client);
	}

	/** B2M `leave` (§3.4): any connection may name any balancer client. */
	leave(payload) {
		const client = this.clients.get(payload.client);
		if (!client) {
			log.error(`leave: unknown client ${payload.client}`);
			return;
		}
		this.drop(client, { announce: true });
	}

	drop(client, { announce }) {
		if (this.isCurrent(client)) {
			this.clients.delete(client.id);
		}
		if (client.room) {
			client.room.leave(client, { announce });
			client.room = null;
		}
	}

	/**
	 * Sends `kick` and forgets the client; the leave is processed here, so a later `leave`
	 * from the balancer only logs an error.
	 */
	kick(client, reason, { announce = true } = {}) {
		if (!this.isCurrent(client)) {
			return;
		}
		client.conn.send({ type: "kick", payload: { client_id: client.id, reason } });
		this.drop(client, { announce });
	}

	/** B2M `client_msg` (§3.5). */
	clientMessage(payload) {
		const client = this.clients.get(payload.client_id);
		if (!client) {
			log.error(`client_msg: unknown client ${payload.client_id}`);
			return;
		}
		client.queue = client.queue.then(() => this.handleClientMessage(client, payload.payload));
	}

	async handleClientMessage(client, msg) {
		if (!this.isCurrent(client) || !client.room) {
			return;
		}
		try {
			switch (msg.action) {
				case "req":
					client.room.request(client, msg.request);
					break;
				case "status":
					client.status = msg.status;
					client.room.userUpdated(client);
					break;
				case "kickme":
					// Echoed unvalidated: any value can come back as a kick reason (§2.2).
					this.kick(client, msg.reason === undefined ? KickReason.UNKNOWN : msg.reason);
					break;
				case "notify":
					if (msg.message === "usernameChanged") {
						const session = await this.session(client.token);
						if (!session) {
							this.kick(client, KickReason.MISSING_TOKEN);
							break;
						}
						this.applySession(client, session);
						if (client.room) {
							client.room.userUpdated(client);
						}
					}
					break;
				case "auth":
					// The balancer must consume the auth frame itself.
					break;
				default:
					log.warn(`client ${client.id}: unknown action ${JSON.stringify(msg.action)}`);
			}
		} catch (e) {
			if (e instanceof BadRequest) {
				log.warn(`client ${client.id}: request ignored: ${e.message}`);
				return;
			}
			log.error(`client ${client.id}: error handling message: ${e.message}`);
			this.kick(client, KickReason.UNKNOWN);
		}
	}

	/** A balancer connection closed: each of its clients leaves (§1.5). */
	connectionClosed(conn) {
		for (const client of [...this.clients.values()]) {
			if (client.conn === conn) {
				this.drop(client, { announce: true });
			}
		}
	}

	/**
	 * One `room_msg` per balancer id that has a member in the room, sent to the first
	 * connection with that id (§3.7, §7 item 6).
	 */
	broadcast(room, msg) {
		const ids = new Set(room.members.map(c => c.conn.balancerId));
		const frame = { type: "room_msg", payload: { room: room.name, payload: msg } };
		for (const id of ids) {
			const conn = this.ctx.balancers.firstById(id);
			if (conn) {
				conn.send(frame);
			}
		}
	}

	unicast(room, client, msg) {
		client.conn.send({ type: "room_msg", payload: { room: room.name, client_id: client.id, payload: msg } });
	}
}

module.exports = { ClientManager };
