"use strict";

// Anonymous sessions get a generated name shaped like the real ones (adjective_color_animal).
const crypto = require("node:crypto");

const ADJECTIVES = ["brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "proud", "quick", "silly", "witty", "zesty"];
const COLORS = ["amber", "azure", "coral", "crimson", "golden", "indigo", "jade", "lilac", "olive", "rose", "ruby", "teal", "violet"];
const ANIMALS = ["badger", "crane", "dolphin", "falcon", "gecko", "heron", "koala", "lemur", "otter", "panda", "quokka", "raven", "tiger", "walrus"];

function pick(list) {
	return list[crypto.randomInt(list.length)];
}

function randomUsername() {
	return `${pick(ADJECTIVES)}_${pick(COLORS)}_${pick(ANIMALS)}`;
}

module.exports = { randomUsername };
