"use strict";

// Reference stand-in for the OpenTogetherTube monolith, as seen from a balancer
// (ott/PROTOCOL.md in the roomlb repository). See README.md for what it does and where it deviates.

const crypto = require("node:crypto");
const { createClient } = require("redis");
const config = require("./lib/config").load();
const log = require("./lib/log");
const { RoomManager } = require("./lib/roommanager");
const { ClientManager } = require("./lib/clients");
const { BalancerManager } = require("./lib/balancer");
const { createApi } = require("./lib/api");

async function main() {
	log.setLevel(config.logLevel);

	const redis = createClient({ url: config.redisUrl });
	redis.on("error", e => log.error(`redis: ${e.message}`));
	await redis.connect();

	const ctx = {
		config,
		redis,
		// A new identity on every start, like the real one.
		id: crypto.randomUUID(),
		httpPort: config.port,
	};
	ctx.rooms = new RoomManager(ctx);
	ctx.clients = new ClientManager(ctx);
	ctx.balancers = new BalancerManager(ctx);

	const httpServer = createApi(ctx);
	await new Promise((resolve, reject) => {
		httpServer.once("error", reject);
		httpServer.listen(config.port, config.bindHost, resolve);
	});
	// init.port must be usable for proxying, so report the bound port when PORT=0.
	ctx.httpPort = httpServer.address().port;

	let balancerAddr = "off";
	if (config.balancingEnabled) {
		const port = await ctx.balancers.listen(config.bindHost, config.balancingPort);
		balancerAddr = `${config.bindHost}:${port}`;
	}

	const gossipTimer = setInterval(() => ctx.balancers.gossip(), config.gossipIntervalMs);
	let ticking = false;
	const keepaliveTimer = setInterval(() => {
		if (ticking) {
			return;
		}
		ticking = true;
		ctx.rooms.tick()
			.catch(e => log.error(`room tick: ${e.stack || e}`))
			.finally(() => { ticking = false; });
	}, config.keepaliveCheckMs);

	// The real one (app.ts): close every balancer link, wait 1 s, then call
	// roommanager.shutdown() without awaiting it and process.exit(0) at once. That shutdown's
	// unloads never get past their first await (the flushed write's SET is still corked in the
	// Redis client), so no room state is written and no `unloaded` is sent; debounced writes
	// still pending die with the process. Until the exit the room tick and the pending timers
	// keep running (the real updater is only stopped by roommanager.shutdown()), so a write
	// that falls due during the delay does land.
	let shuttingDown = false;
	async function shutdown(signal) {
		if (shuttingDown) {
			return;
		}
		shuttingDown = true;
		log.info(`${signal}: shutting down`);
		clearInterval(gossipTimer);
		ctx.balancers.closeAll(1001, "Server shutting down");
		await new Promise(r => setTimeout(r, config.shutdownDelayMs));
		const pending = ctx.rooms.rooms.filter(r => r.hasPendingWrite).length;
		log.info(`exiting without writing state: ${ctx.rooms.rooms.length} rooms loaded, ${pending} of them with a pending write`);
		process.exit(0);
	}
	process.on("SIGTERM", () => shutdown("SIGTERM"));
	process.on("SIGINT", () => shutdown("SIGINT"));

	console.log(`monolith ready http=${config.bindHost}:${ctx.httpPort} balancer=${balancerAddr} id=${ctx.id} region=${config.region}`);
}

main().catch(e => {
	log.error(`startup failed: ${e.stack || e}`);
	process.exit(1);
});
