const fs = require('fs');
const label = process.env['INPUT_LABEL'];
if (process.env['INPUT_WITH-DEFAULT'] !== 'the-default') { console.log('default input missing'); process.exit(1); }
if (label === 'First Action' && process.env['INPUT_MULTI_WORD'] !== 'spaced input') { console.log('spaced input missing'); process.exit(1); }
if (!process.env['GITHUB_ACTION_PATH'] && !__dirname) { process.exit(1); }
fs.appendFileSync(process.env['GITHUB_OUTPUT'], `echoed=${label}\n`);
fs.appendFileSync(process.env['GITHUB_STATE'], `remembered=${label}-state\n`);
fs.appendFileSync(process.env['GITHUB_ENV'], `SET_BY_MAIN=${label}\n`);
console.log(`main ran for ${label}`);
