"use strict";

const log = require("./log");
const { Room, KickReason } = require("./room");

// Stand-in for the real monolith's SQL `Rooms` table: a Redis hash, field = lowercased room
// name, value = JSON settings of a permanent room.
const REFDB_KEY = "refdb:rooms";
const LOAD_EPOCH_KEY = "roommanager:load_epoch";
// The real monolith resets the counter here (ott/PROTOCOL.md §7).
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
	 * Room lookup of ott/PROTOCOL.md §4.1. There is deliberately no lock or in-flight map: two
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

	/**
	 * Unloads one instance: members kicked, the instance out of the manager, `unloaded` to every
	 * balancer. Returns false when a Keepalive unload was refused.
	 *
	 * Commanded (the real one skips `onBeforeUnload()` and keeps Redis): room:<name> is kept
	 * and the instance's timers are left running, so a pending 50 ms sync still fires (to
	 * nobody) and, with a stored field dirty, (re)starts the write debounce, and a pending
	 * write still lands later with the instance's state at that time, whether or not the room
	 * was loaded again meanwhile. Keepalive/Admin: the pending write is flushed, then
	 * room:<name> and room-sync:<name> are deleted.
	 */
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
		if (reason === UnloadReason.Commanded) {
			if (room.hasPendingWrite) {
				log.info(`room ${room.name}: state write still pending after the Commanded unload`);
			}
		} else {
			const wasPending = room.stop();
			try {
				if (wasPending) {
					await room.writeState();
				}
				await this.ctx.redis.del([`room:${room.name}`, `room-sync:${room.name}`]);
			} catch (e) {
				log.error(`room ${room.name}: redis during unload failed: ${e.message}`);
			}
		}
		log.info(`room ${room.name}: unloaded (${reason})`);
		this.ctx.balancers.broadcastInitialised({ type: "unloaded", payload: { name: room.name, reason } });
		return true;
	}

	gossip() {
		return { rooms: this.rooms.map(r => ({ room: r.metadata(), load_epoch: r.loadEpoch })) };
	}

	/**
	 * The real room manager's `update()`, every KEEPALIVE_CHECK_MS (1 s in the real one): for
	 * each loaded room, `update()` (queue/playback housekeeping, keepalive stamp) then `sync()`,
	 * then the staleness check (§3.7). An idle room goes after unload_after/2 .. unload_after.
	 */
	async tick() {
		for (const room of [...this.rooms]) {
			if (!this.rooms.includes(room)) {
				continue; // unloaded while an earlier room's unload was awaited
			}
			const now = Date.now();
			try {
				room.update(now);
				room.sync();
			} catch (e) {
				log.error(`room ${room.name}: update failed: ${e.stack || e}`);
			}
			if (now - room.keepAliveStamp > this.ctx.config.unloadAfterMs) {
				await this.unload(room, UnloadReason.Keepalive);
			}
		}
	}
}

module.exports = { RoomManager, RoomNotFound, RoomNameTaken, UnloadReason };
