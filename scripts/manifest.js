#!/usr/bin/env node
// Writes oclif.manifest.json from the built commands, so `ess --help` does not import every command module.
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Config } from '@oclif/core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const config = await Config.load({ root, devPlugins: false, userPlugins: false });
const commands = {};
for (const command of config.commands) {
  const { load, ...cached } = command;
  commands[command.id] = JSON.parse(JSON.stringify(cached));
}
writeFileSync(join(root, 'oclif.manifest.json'), `${JSON.stringify({ version: config.version, commands }, null, 2)}\n`);
console.error(`oclif.manifest.json: ${Object.keys(commands).length} commands`);
