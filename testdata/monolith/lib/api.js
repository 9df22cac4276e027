"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const log = require("./log");
const { randomUsername } = require("./names");
const { RoomNotFound, RoomNameTaken } = require("./roommanager");

const INDEX_HTML = require("node:fs").readFileSync(require("node:path").join(__dirname, "..", "public", "index.html"));

const SESSION_TTL_S = 14 * 24 * 3600;
const MAX_BODY = 1 << 20;
const NAME_RE = /^[a-z0-9_-]+$/i;
const RESERVED = ["list", "create", "generate"];
const VISIBILITIES = ["public", "unlisted", "private"];
const QUEUE_MODES = ["manual", "vote", "loop", "dj"];

class ApiError extends Error {
	constructor(status, body) {
		super(body.error ? body.error.message : "api error");
		this.status = status;
		this.body = body;
	}
}

function badArg(arg, reason) {
	return new ApiError(400, {
		success: false,
		error: { name: "BadApiArgumentException", message: `${arg} ${reason}`, arg, reason },
	});
}

function sendJson(res, status, body, headers = {}) {
	const text = JSON.stringify(body);
	res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
	res.end(text);
}

function readJson(req) {
	return new Promise((resolve, reject) => {
		const chunks = [];
		let size = 0;
		req.on("data", c => {
			size += c.length;
			if (size > MAX_BODY) {
				reject(new ApiError(413, { success: false, error: { name: "PayloadTooLarge", message: "body too large" } }));
				req.destroy();
				return;
			}
			chunks.push(c);
		});
		req.on("end", () => {
			if (size === 0) {
				resolve({});
				return;
			}
			try {
				const v = JSON.parse(Buffer.concat(chunks).toString());
				resolve(v && typeof v === "object" ? v : {});
			} catch (e) {
				reject(new ApiError(400, { success: false, error: { name: "BadRequest", message: "body is not JSON" } }));
			}
		});
		req.on("error", reject);
	});
}

/** Room name rules, only enforced at creation (ott/PROTOCOL.md §8 item 2). */
function validateCreate(body) {
	const { name } = body;
	if (typeof name !== "string" || name === "") {
		throw badArg("name", "missing");
	}
	if (RESERVED.includes(name)) {
		throw badArg("name", "not allowed (reserved)");
	}
	if (name.length < 3 || name.length > 32) {
		throw badArg("name", "not allowed (too short or too long)");
	}
	if (!NAME_RE.test(name)) {
		throw badArg("name", "not allowed (invalid characters)");
	}
	if (body.visibility !== undefined && !VISIBILITIES.includes(body.visibility)) {
		throw badArg("visibility", `must be one of ${VISIBILITIES.join(", ")}`);
	}
	if (body.queueMode !== undefined && !QUEUE_MODES.includes(body.queueMode)) {
		throw badArg("queueMode", `must be one of ${QUEUE_MODES.join(", ")}`);
	}
	for (const f of ["title", "description"]) {
		if (body[f] !== undefined && typeof body[f] !== "string") {
			throw badArg(f, "must be a string");
		}
	}
	return {
		name,
		title: body.title ?? "",
		description: body.description ?? "",
		visibility: body.visibility ?? "public",
		queueMode: body.queueMode ?? "manual",
		// The real API defaults to a temporary room when isTemporary is absent.
		isTemporary: body.isTemporary === undefined ? true : !!body.isTemporary,
	};
}

function roomInfo(room) {
	const sync = room.fullSync();
	delete sync.action;
	return { ...sync, users: room.members.map(m => room.userInfo(m)) };
}

function createApi(ctx) {
	const { rooms, redis } = ctx;

	async function route(req, res) {
		const url = new URL(req.url, "http://monolith");
		const path = url.pathname;
		const m = req.method;

		if (path === "/api/status" && m === "GET") {
			return sendJson(res, 200, { status: "ok" });
		}
		if ((path === "/" || path === "/index.html") && m === "GET") {
			// The real monolith serves its web client; this one serves a small
			// page to try a room by hand (roomlb dev).
			res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
			return res.end(INDEX_HTML);
		}
		if (path === "/api/auth/grant" && m === "GET") {
			const token = crypto.randomBytes(512).toString("base64");
			const session = { isLoggedIn: false, username: randomUsername() };
			await redis.setEx(`auth:${token}`, SESSION_TTL_S, JSON.stringify(session));
			return sendJson(res, 200, { token }, {
				"Set-Cookie": `token=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${SESSION_TTL_S}`,
			});
		}
		if (path === "/api/room/list" && m === "GET") {
			const list = rooms.rooms
				.filter(r => r.visibility === "public")
				.map(r => r.metadata())
				.sort((a, b) => b.users - a.users || a.name.localeCompare(b.name));
			return sendJson(res, 200, list);
		}
		if (path === "/api/room/create" && m === "POST") {
			const opts = validateCreate(await readJson(req));
			await rooms.createRoom(opts);
			return sendJson(res, 200, { success: true });
		}
		if (path === "/api/room/generate" && m === "POST") {
			const room = await rooms.createRoom({ name: crypto.randomUUID(), isTemporary: true });
			return sendJson(res, 200, { success: true, room: room.name });
		}
		const rm = /^\/api\/room\/([^/]+)\/?$/.exec(path);
		if (rm && m === "GET") {
			let name;
			try {
				name = decodeURIComponent(rm[1]);
			} catch (e) {
				throw badArg("name", "is not valid percent-encoding");
			}
			// Like the real one, merely looking at a room loads it (and tells the balancers).
			const room = await rooms.getRoom(name);
			return sendJson(res, 200, roomInfo(room));
		}
		return sendJson(res, 404, { success: false, error: { name: "NotFound", message: "not found" } });
	}

	return http.createServer((req, res) => {
		route(req, res).catch(e => {
			if (e instanceof ApiError) {
				return sendJson(res, e.status, e.body);
			}
			if (e instanceof RoomNotFound) {
				return sendJson(res, 404, { success: false, error: { name: "RoomNotFoundException", message: "Room not found" } });
			}
			if (e instanceof RoomNameTaken) {
				return sendJson(res, 400, { success: false, error: { name: "RoomNameTakenException", message: "Room name taken" } });
			}
			log.error(`http ${req.method} ${req.url}: ${e.stack || e}`);
			if (!res.headersSent) {
				sendJson(res, 500, { success: false, error: { name: "Unknown", message: "internal error" } });
			}
		});
	});
}

module.exports = { createApi, validateCreate };
