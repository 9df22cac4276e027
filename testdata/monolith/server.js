"use strict";

// Reference stand-in for the OpenTogetherTube monolith, as seen from a balancer
// (shared/ott-protocol.md). See README.md for what it does and where it deviates.

const crypto = require("node:crypto");
const { createClient } = require("redis");
const config = require("./lib/config").load();
const log = require("./lib/log");
const { RoomManager, UnloadReason } = require("./lib/roommanager");
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

	let shuttingDown = false;
	async function shutdown(signal) {
		if (shuttingDown) {
			return;
		}
		shuttingDown = true;
		log.info(`${signal}: shutting down`);
		clearInterval(gossipTimer);
		clearInterval(keepaliveTimer);
		ctx.balancers.closeAll(1001, "Server shutting down");
		await new Promise(r => setTimeout(r, config.shutdownDelayMs));
		for (const room of [...ctx.rooms.rooms]) {
			await ctx.rooms.unload(room, UnloadReason.Shutdown);
		}
		httpServer.close();
		try {
			await redis.quit();
		} catch (e) {
			log.error(`redis quit: ${e.message}`);
		}
		log.info("bye");
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
