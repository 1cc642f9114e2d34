console.log(`self post ran with state ${process.env['STATE_from_pre']}`);
