const fs = require('fs');
fs.appendFileSync(process.env['GITHUB_STATE'], 'from_pre=yes\n');
console.log(`self pre ran for ${process.env['GITHUB_ACTION_REPOSITORY']}`);
