"use strict";

// Logs go to stderr so that stdout carries only the "ready" line tests and tools parse.
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
let threshold = LEVELS.info;

function setLevel(name) {
	threshold = LEVELS[name] ?? LEVELS.info;
}

function make(level) {
	return (...args) => {
		if (LEVELS[level] >= threshold) {
			console.error(`${new Date().toISOString()} ${level} ${args.join(" ")}`);
		}
	};
}

module.exports = {
	setLevel,
	debug: make("debug"),
	info: make("info"),
	warn: make("warn"),
	error: make("error"),
};
