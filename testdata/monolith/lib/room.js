"use strict";

const log = require("./log");

// Close codes the monolith uses when it kicks clients (ott/PROTOCOL.md §3.4).
const KickReason = Object.freeze({
	AWAY: 1001,
	UNKNOWN: 4000,
	INVALID_CONNECTION_URL: 4001,
	ROOM_NOT_FOUND: 4002,
	ROOM_UNLOADED: 4003,
	MISSING_TOKEN: 4004,
	KICKED: 4005,
});

const Role = Object.freeze({ Owner: -1, UnregisteredUser: 0, RegisteredUser: 1 });

const RequestType = Object.freeze({
	Join: 0,
	Leave: 1,
	Playback: 2,
	Skip: 3,
	Seek: 4,
	Add: 5,
	Remove: 6,
	Chat: 11,
});

// Fields that go into Redis `room:<name>` (ott/PROTOCOL.md §7). A change to any of them
// schedules the debounced state write.
const STORED_FIELDS = [
	"name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource",
	"queue", "isPlaying", "playbackPosition", "playbackSpeed", "grants", "userRoles", "owner",
	"_playbackStart", "videoSegments", "autoSkipSegmentCategories", "prevQueue",
	"restoreQueueBehavior", "enableVoteSkip",
];

// How long a burst of changes is coalesced before one client-facing `sync` goes out. The real
// room uses the same 50 ms debounce, which is why a freshly loaded room emits a `sync` ~50 ms
// after loading.
const SYNC_DEBOUNCE_MS = 50;

// Permission bits are opaque to a balancer; this fixture does no permission checks at all.
const DEFAULT_GRANTS = [[-1, 4194303], [0, 4063231], [1, 4063231], [2, 4194303], [3, 4194303], [4, 4194303]];

class BadRequest extends Error {}

class Room {
	/**
	 * @param ctx shared context: config, redis, clients (for message routing)
	 * @param opts stored state (from Redis), stored settings (from the reference database) or
	 *   creation options (from HTTP)
	 */
	constructor(ctx, opts) {
		this.ctx = ctx;
		this.name = opts.name;
		this.title = opts.title ?? "";
		this.description = opts.description ?? "";
		this.isTemporary = !!opts.isTemporary;
		this.visibility = opts.visibility ?? "public";
		this.queueMode = opts.queueMode ?? "manual";
		this.currentSource = opts.currentSource ?? null;
		this.queue = Array.isArray(opts.queue) ? opts.queue : [];
		this.isPlaying = !!opts.isPlaying;
		this.playbackPosition = typeof opts.playbackPosition === "number" ? opts.playbackPosition : 0;
		this.playbackSpeed = opts.playbackSpeed ?? 1;
		this.grants = opts.grants ?? DEFAULT_GRANTS;
		this.userRoles = opts.userRoles ?? [[2, []], [3, []], [4, []]];
		this.owner = opts.owner ?? null;
		this._playbackStart = opts._playbackStart ?? null;
		this.videoSegments = opts.videoSegments ?? [];
		this.autoSkipSegmentCategories = opts.autoSkipSegmentCategories ?? [];
		this.prevQueue = opts.prevQueue ?? null;
		this.restoreQueueBehavior = opts.restoreQueueBehavior ?? "prompt";
		this.enableVoteSkip = !!opts.enableVoteSkip;

		this.loadEpoch = 0;
		/** clients joined to this room, in join order */
		this.members = [];
		this.keepAliveStamp = Date.now();

		this._dirty = new Set();
		this._syncTimer = null;
		this._storeTimer = null;

		// Like the real room, a new instance starts with every field dirty: that produces the
		// broadcast `sync` shortly after a load and the first Redis write ~STATE_DEBOUNCE_MS
		// after creation.
		this.changed(STORED_FIELDS);
	}

	get users() {
		return this.members.length;
	}

	get hasOwner() {
		return this.owner !== null;
	}

	get realPlaybackPosition() {
		if (this.isPlaying && this._playbackStart !== null) {
			return this.playbackPosition + (Date.now() - this._playbackStart) / 1000 * this.playbackSpeed;
		}
		return this.playbackPosition;
	}

	get voteCounts() {
		return [];
	}

	/** RoomMetadata as sent in `loaded` and `gossip` (ott/PROTOCOL.md §3.2). */
	metadata() {
		return {
			name: this.name,
			title: this.title,
			description: this.description,
			isTemporary: this.isTemporary,
			visibility: this.visibility,
			queueMode: this.queueMode,
			currentSource: this.currentSource,
			users: this.users,
		};
	}

	fullSync() {
		return {
			action: "sync",
			name: this.name,
			title: this.title,
			description: this.description,
			isTemporary: this.isTemporary,
			visibility: this.visibility,
			queueMode: this.queueMode,
			currentSource: this.currentSource,
			queue: this.queue,
			isPlaying: this.isPlaying,
			playbackPosition: this.realPlaybackPosition,
			playbackSpeed: this.playbackSpeed,
			grants: this.grants,
			hasOwner: this.hasOwner,
			voteCounts: this.voteCounts,
			videoSegments: this.videoSegments,
			autoSkipSegmentCategories: this.autoSkipSegmentCategories,
			prevQueue: this.prevQueue,
			restoreQueueBehavior: this.restoreQueueBehavior,
			enableVoteSkip: this.enableVoteSkip,
			votesToSkip: 0,
		};
	}

	serializeState() {
		const state = {};
		for (const f of STORED_FIELDS) {
			state[f] = this[f];
		}
		return JSON.stringify(state);
	}

	userInfo(client) {
		return {
			id: client.id,
			name: client.name,
			isLoggedIn: client.isLoggedIn,
			status: client.status,
			role: client.isLoggedIn ? Role.RegisteredUser : Role.UnregisteredUser,
		};
	}

	broadcast(msg) {
		this.ctx.clients.broadcast(this, msg);
	}

	unicast(client, msg) {
		this.ctx.clients.unicast(this, client, msg);
	}

	publishEvent(request, client, additional = {}) {
		this.broadcast({ action: "event", request, user: this.userInfo(client), additional });
	}

	/**
	 * Marks fields dirty and (re)starts the 50 ms sync debounce (the real `markDirty` and its
	 * lodash-debounced `throttledSync`). Nothing else: the state write is scheduled by the sync.
	 * There is no guard for an unloaded room: a Commanded unload leaves the instance's timers
	 * running, as the real one does.
	 */
	changed(fields) {
		for (const f of fields) {
			this._dirty.add(f);
		}
		clearTimeout(this._syncTimer);
		this._syncTimer = setTimeout(() => {
			this._syncTimer = null;
			this.sync();
		}, SYNC_DEBOUNCE_MS);
	}

	/**
	 * The real `Room.sync()`: broadcasts the dirty fields and, when any of them is stored,
	 * (re)starts the debounced state write. Runs from the 50 ms debounce and from every room
	 * tick; a pending debounce that finds nothing dirty (the tick synced first) does nothing.
	 * So the write lands STATE_DEBOUNCE_MS after the sync of the last change, i.e. ~50 ms more
	 * after the change itself (or less when a tick synced it sooner).
	 */
	sync() {
		if (this._dirty.size === 0) {
			return;
		}
		const full = this.fullSync();
		const msg = { action: "sync" };
		let anyStored = false;
		for (const f of this._dirty) {
			if (f in full && f !== "action") {
				msg[f] = full[f];
			}
			if (STORED_FIELDS.includes(f)) {
				anyStored = true;
			}
		}
		this._dirty.clear();
		if (anyStored) {
			this.saveStateDebounced();
		}
		// After a Commanded unload the members were kicked: this reaches nobody.
		this.broadcast(msg);
	}

	/**
	 * The real `saveStateToRedisDebounced`: lodash `_.debounce(saveStateToRedis, 5000)` with
	 * default options, a plain trailing debounce that every call pushes back.
	 */
	saveStateDebounced() {
		clearTimeout(this._storeTimer);
		this._storeTimer = setTimeout(() => {
			this._storeTimer = null;
			this.writeState().catch(e => log.error(`room ${this.name}: state write failed: ${e.message}`));
		}, this.ctx.config.stateDebounceMs);
	}

	/** Writes room:<name> with the state the instance has now. */
	async writeState() {
		await this.ctx.redis.set(`room:${this.name}`, this.serializeState(), { EX: this.ctx.config.expireAfterS });
		log.debug(`room ${this.name}: state written`);
	}

	get hasPendingWrite() {
		return this._storeTimer !== null;
	}

	/**
	 * Stops the sync and write timers (Keepalive/Admin unloads). Returns whether a state write
	 * was pending; the caller flushes it. A Commanded unload does not call this.
	 */
	stop() {
		clearTimeout(this._syncTimer);
		this._syncTimer = null;
		const pending = this._storeTimer !== null;
		clearTimeout(this._storeTimer);
		this._storeTimer = null;
		return pending;
	}

	/** Adds the client and emits the join sequence of ott/PROTOCOL.md §4.3, in order. */
	join(client) {
		this.members.push(client);
		const info = this.userInfo(client);
		this.unicast(client, this.fullSync());
		this.publishEvent({ type: RequestType.Join, info }, client);
		this.broadcast({ action: "sync", playbackPosition: this.realPlaybackPosition });
		this.broadcast({ action: "user", update: { kind: "update", value: info } });
		this.unicast(client, { action: "user", update: { kind: "init", value: this.members.map(m => this.userInfo(m)) } });
		this.unicast(client, { action: "you", info: { id: client.id } });
	}

	/**
	 * The leaver is removed before the broadcasts, so a balancer whose only client here was the
	 * leaver hears nothing (ott/PROTOCOL.md §4.4).
	 */
	leave(client, { announce = true } = {}) {
		const i = this.members.indexOf(client);
		if (i === -1) {
			return;
		}
		const info = this.userInfo(client);
		this.members.splice(i, 1);
		if (announce) {
			this.broadcast({ action: "event", request: { type: RequestType.Leave }, user: info, additional: { user: info } });
			this.broadcast({ action: "user", update: { kind: "remove", value: client.id } });
		}
	}

	userUpdated(client) {
		this.broadcast({ action: "user", update: { kind: "update", value: this.userInfo(client) } });
	}

	/**
	 * The real `Room.update()`, run for every loaded room on each room manager tick (followed
	 * by `sync()`): an empty player takes the head of the queue, and a playing video past its
	 * end (`endAt ?? length ?? 0`, so a playing video without a length ends at the first tick
	 * after it started) makes way for the next. Then the keepalive stamp: refreshed, with an
	 * EXPIRE of room:<name>, at most every unload_after/2 while the room has users.
	 */
	update(now) {
		const cur = this.currentSource;
		if ((cur === null && this.queue.length > 0)
			|| (cur && this.isPlaying && this.realPlaybackPosition > (cur.endAt ?? cur.length ?? 0))) {
			this.dequeueNext();
		}
		const { unloadAfterMs, expireAfterS } = this.ctx.config;
		if (this.users > 0 && now - this.keepAliveStamp >= unloadAfterMs / 2) {
			this.keepAliveStamp = now;
			this.ctx.redis.expire(`room:${this.name}`, expireAfterS)
				.catch(e => log.error(`room ${this.name}: expire failed: ${e.message}`));
		}
	}

	/**
	 * The real `dequeueNext()` for the fields modelled here (no vote skip, no sponsorblock:
	 * videoSegments stays empty). Note `_playbackStart` is set even when paused and is not a
	 * dirty field of its own, and `isPlaying` only changes when the queue runs empty.
	 */
	dequeueNext() {
		const changed = [];
		if (this.currentSource !== null) {
			if (this.queueMode === "dj") {
				// Dj mode restarts the current item (without its trim) and stops there.
				this.currentSource = withoutTrim(this.currentSource);
				this.playbackPosition = 0;
				this._playbackStart = Date.now();
				this.changed(["currentSource", "playbackPosition"]);
				return;
			} else if (this.queueMode === "loop") {
				this.queue.push(withoutTrim(this.currentSource));
				changed.push("queue");
			}
		}
		if (this.queue.length > 0) {
			this.currentSource = this.queue.shift();
			this.playbackPosition = this.currentSource.startAt ?? 0;
			this._playbackStart = Date.now();
			changed.push("queue", "currentSource", "playbackPosition");
		} else if (this.currentSource !== null) {
			if (this.isPlaying) {
				this.isPlaying = false;
				changed.push("isPlaying");
			}
			this.playbackPosition = 0;
			this._playbackStart = Date.now();
			this.currentSource = null;
			changed.push("playbackPosition", "currentSource");
		}
		this.playbackSpeed = 1;
		changed.push("playbackSpeed");
		this.changed(changed);
	}

	/**
	 * A room request from a client (`{"action":"req","request":{...}}`). Malformed but
	 * well-typed-enough requests are logged and ignored like the real monolith's permission and
	 * validation failures; anything that throws a TypeError (e.g. a null request) propagates and
	 * gets the client kicked with 4000.
	 */
	request(client, request) {
		switch (request.type) {
			case RequestType.Chat: {
				if (typeof request.text !== "string") {
					throw new BadRequest("chat text must be a string");
				}
				this.broadcast({ action: "chat", from: this.userInfo(client), text: request.text });
				return;
			}
			case RequestType.Playback: {
				if (typeof request.state !== "boolean") {
					throw new BadRequest("playback state must be a boolean");
				}
				if (request.state === this.isPlaying) {
					return;
				}
				if (request.state) {
					this._playbackStart = Date.now();
				} else {
					this.playbackPosition = this.realPlaybackPosition;
					this._playbackStart = null;
				}
				this.isPlaying = request.state;
				this.publishEvent(request, client);
				this.changed(["isPlaying", "playbackPosition", "_playbackStart"]);
				return;
			}
			case RequestType.Seek: {
				if (typeof request.value !== "number" || !Number.isFinite(request.value)) {
					throw new BadRequest("seek value must be a number");
				}
				const prevPosition = this.realPlaybackPosition;
				this.playbackPosition = request.value;
				this._playbackStart = this.isPlaying ? Date.now() : null;
				this.publishEvent(request, client, { prevPosition });
				this.changed(["playbackPosition", "_playbackStart"]);
				return;
			}
			case RequestType.Skip: {
				// Nothing playing: the real one returns before any event.
				if (!this.currentSource) {
					return;
				}
				const video = this.currentSource;
				const prevPosition = this.realPlaybackPosition;
				this.dequeueNext();
				this.publishEvent(request, client, { video, prevPosition });
				// The real skip clears videoSegments afterwards, which marks it dirty.
				this.videoSegments = [];
				this.changed(["videoSegments"]);
				return;
			}
			case RequestType.Add: {
				const videos = videosOf(request);
				for (const v of videos) {
					if (this.queue.some(q => sameVideo(q, v)) || sameVideo(this.currentSource, v)) {
						throw new BadRequest(`video ${v.service}:${v.id} already queued`);
					}
				}
				// Only enqueued: an empty player takes it at the next room tick (update()).
				this.queue.push(...videos);
				this.publishEvent(request, client, { videos });
				this.changed(["queue"]);
				return;
			}
			case RequestType.Remove: {
				const v = request.video;
				const i = this.queue.findIndex(q => sameVideo(q, v));
				if (i === -1) {
					throw new BadRequest("video not found in queue");
				}
				const [video] = this.queue.splice(i, 1);
				this.publishEvent(request, client, { video });
				this.changed(["queue"]);
				return;
			}
			default:
				throw new BadRequest(`unsupported request type ${JSON.stringify(request.type)}`);
		}
	}
}

function videosOf(request) {
	let videos;
	if (Array.isArray(request.videos)) {
		videos = request.videos;
	} else if (request.video) {
		videos = [request.video];
	} else if (typeof request.url === "string") {
		// No info extraction here: a URL becomes an opaque "direct" video.
		videos = [{ service: "direct", id: request.url }];
	} else {
		throw new BadRequest("add needs video, videos or url");
	}
	for (const v of videos) {
		if (!v || typeof v.service !== "string" || typeof v.id !== "string") {
			throw new BadRequest("video needs string service and id");
		}
	}
	return videos.map(v => ({ ...v }));
}

/** A queue item without its startAt/endAt trim (the real `clearQueueItemTrim`). */
function withoutTrim(video) {
	const { startAt, endAt, ...rest } = video;
	return rest;
}

function sameVideo(a, b) {
	return !!a && !!b && a.service === b.service && a.id === b.id;
}

module.exports = { Room, KickReason, BadRequest, RequestType };
