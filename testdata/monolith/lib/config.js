"use strict";

// Environment-only configuration. The real monolith reads TOML files first and env vars on
// top (ott/PROTOCOL.md §6); only the knobs the balancer protocol depends on exist here.

function int(name, def) {
	const raw = process.env[name];
	if (raw === undefined || raw === "") {
		return def;
	}
	const n = Number(raw);
	if (!Number.isInteger(n) || n < 0) {
		throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
	}
	return n;
}

function load() {
	return {
		port: int("PORT", 3000),
		// The real monolith only opens the balancer port for the exact string "true".
		balancingEnabled: process.env.BALANCING_ENABLED === "true",
		balancingPort: int("BALANCING_PORT", 3002),
		region: process.env.FLY_REGION || process.env.BALANCING_REGION || "unknown",
		redisUrl: process.env.REDIS_URL || "redis://localhost:6379",
		// Deviation: the real monolith binds all interfaces; a test fixture should not.
		bindHost: process.env.BIND_HOST || "127.0.0.1",
		unloadAfterMs: int("ROOM_UNLOAD_AFTER", 300) * 1000,
		expireAfterS: int("ROOM_EXPIRE_AFTER", 7200),
		stateDebounceMs: int("STATE_DEBOUNCE_MS", 5000),
		gossipIntervalMs: int("GOSSIP_INTERVAL_MS", 20000),
		initTimeoutMs: int("INIT_TIMEOUT_MS", 10000),
		keepaliveCheckMs: int("KEEPALIVE_CHECK_MS", 1000),
		shutdownDelayMs: int("SHUTDOWN_DELAY_MS", 1000),
		logLevel: process.env.LOG_LEVEL || "info",
	};
}

module.exports = { load };
