"use strict";

const log = require("./log");
const { Room, KickReason } = require("./room");

// Stand-in for the real monolith's SQL `Rooms` table: a Redis hash, field = lowercased room
// name, value = JSON settings of a permanent room.
const REFDB_KEY = "refdb:rooms";
const LOAD_EPOCH_KEY = "roommanager:load_epoch";
// The real monolith resets the counter here (ott-protocol.md §6).
const LOAD_EPOCH_WRAP = 2147483640;

const UnloadReason = Object.freeze({
	Keepalive: "Keepalive",
	Admin: "Admin",
	Commanded: "Commanded",
	Shutdown: "Shutdown",
});

class RoomNotFound extends Error {
	constructor(name) {
		super(`Room not found: ${name}`);
		this.roomName = name;
	}
}

class RoomNameTaken extends Error {
	constructor(name) {
		super(`Room name taken: ${name}`);
	}
}

class RoomManager {
	constructor(ctx) {
		this.ctx = ctx;
		/** Loaded rooms in load order; may hold two instances of one name (§7 item 4). */
		this.rooms = [];
	}

	/** First loaded instance whose name matches case-insensitively. */
	findLoaded(name) {
		const lower = name.toLowerCase();
		return this.rooms.find(r => r.name.toLowerCase() === lower);
	}

	/**
	 * Room lookup of ott-protocol.md §3.1. There is deliberately no lock or in-flight map: two
	 * concurrent lookups of the same unloaded room both load it, like the real one.
	 */
	async getRoom(name) {
		const loaded = this.findLoaded(name);
		if (loaded) {
			return loaded;
		}
		const { redis } = this.ctx;
		// Exact casing: a lookup with another casing misses Redis (§7 item 1).
		const stateJson = await redis.get(`room:${name}`);
		let opts = null;
		if (stateJson !== null) {
			opts = JSON.parse(stateJson);
		} else {
			const settingsJson = await redis.hGet(REFDB_KEY, name.toLowerCase());
			if (settingsJson) {
				opts = { ...JSON.parse(settingsJson), isTemporary: false };
			}
		}
		if (!opts) {
			throw new RoomNotFound(name);
		}
		const room = new Room(this.ctx, opts);
		await this.addRoom(room);
		log.info(`room ${room.name}: loaded (epoch ${room.loadEpoch})`);
		return room;
	}

	async addRoom(room) {
		const { redis } = this.ctx;
		let epoch = await redis.incr(LOAD_EPOCH_KEY);
		if (epoch >= LOAD_EPOCH_WRAP) {
			await redis.set(LOAD_EPOCH_KEY, "0");
		}
		room.loadEpoch = epoch;
		this.rooms.push(room);
		// Looked up by name again, as the real one does: with a duplicate instance the `loaded`
		// reports the first instance's epoch (§7 item 4).
		const first = this.findLoaded(room.name);
		this.ctx.balancers.broadcastInitialised({
			type: "loaded",
			payload: { room: first.metadata(), load_epoch: first.loadEpoch },
		});
	}

	/** Creation over HTTP. `opts` is already validated. */
	async createRoom(opts) {
		const { redis } = this.ctx;
		const lower = opts.name.toLowerCase();
		if (this.findLoaded(opts.name)
			|| await redis.hExists(REFDB_KEY, lower)
			|| await redis.exists(`room:${opts.name}`)) {
			throw new RoomNameTaken(opts.name);
		}
		if (!opts.isTemporary) {
			const settings = {
				name: opts.name,
				title: opts.title ?? "",
				description: opts.description ?? "",
				visibility: opts.visibility ?? "public",
				queueMode: opts.queueMode ?? "manual",
			};
			await redis.hSet(REFDB_KEY, lower, JSON.stringify(settings));
		}
		const room = new Room(this.ctx, opts);
		await this.addRoom(room);
		log.info(`room ${room.name}: created (temporary=${room.isTemporary}, epoch ${room.loadEpoch})`);
		return room;
	}

	/**
	 * B2M `unload` path. Throws RoomNotFound when the room is not loaded; the balancer link
	 * does not catch it, which is what kills the real monolith (§3.6).
	 */
	async unloadByName(name, reason) {
		const room = this.findLoaded(name);
		if (!room) {
			throw new RoomNotFound(name);
		}
		return this.unload(room, reason);
	}

	/** Unloads one instance. Returns false when a Keepalive unload was refused. */
	async unload(room, reason) {
		if (!this.rooms.includes(room)) {
			return false;
		}
		if (reason === UnloadReason.Keepalive && room.users > 0) {
			log.warn(`room ${room.name}: keepalive unload refused, ${room.users} users present`);
			return false;
		}
		const kickCode = (reason === UnloadReason.Commanded || reason === UnloadReason.Shutdown)
			? KickReason.AWAY : KickReason.ROOM_UNLOADED;
		for (const client of [...room.members]) {
			this.ctx.clients.kick(client, kickCode, { announce: false });
		}
		this.rooms.splice(this.rooms.indexOf(room), 1);
		const wasPending = room.stop();
		const { redis } = this.ctx;
		try {
			if (reason === UnloadReason.Commanded) {
				if (wasPending) {
					log.info(`room ${room.name}: pending state write dropped (Commanded unload)`);
				}
			} else if (reason === UnloadReason.Shutdown) {
				await room.writeState();
			} else {
				if (wasPending) {
					await room.writeState();
				}
				await redis.del([`room:${room.name}`, `room-sync:${room.name}`]);
			}
		} catch (e) {
			log.error(`room ${room.name}: redis during unload failed: ${e.message}`);
		}
		log.info(`room ${room.name}: unloaded (${reason})`);
		this.ctx.balancers.broadcastInitialised({ type: "unloaded", payload: { name: room.name, reason } });
		return true;
	}

	gossip() {
		return { rooms: this.rooms.map(r => ({ room: r.metadata(), load_epoch: r.loadEpoch })) };
	}

	/**
	 * Once a second: playback housekeeping, keepalive stamps and reaping (§3.7). The stamp is
	 * refreshed at most every unload_after/2 and only while the room has users, so an idle room
	 * goes after unload_after/2 .. unload_after.
	 */
	async tick() {
		const now = Date.now();
		const { unloadAfterMs, expireAfterS } = this.ctx.config;
		for (const room of [...this.rooms]) {
			room.tick(now);
			if (room.users > 0 && now - room.keepAliveStamp >= unloadAfterMs / 2) {
				room.keepAliveStamp = now;
				this.ctx.redis.expire(`room:${room.name}`, expireAfterS)
					.catch(e => log.error(`room ${room.name}: expire failed: ${e.message}`));
			}
			if (now - room.keepAliveStamp > unloadAfterMs) {
				await this.unload(room, UnloadReason.Keepalive);
			}
		}
	}
}

module.exports = { RoomManager, RoomNotFound, RoomNameTaken, UnloadReason };
