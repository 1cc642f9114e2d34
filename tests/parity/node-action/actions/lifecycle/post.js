const state = process.env['STATE_remembered'];
if (!state) { console.log('state missing'); process.exit(1); }
console.log(`post ran with ${state}`);
