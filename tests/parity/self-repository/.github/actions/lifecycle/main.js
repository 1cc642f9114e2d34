if (process.env['GITHUB_ACTION_REF'] !== process.env['GITHUB_SHA']) {
  console.log(`action ref ${process.env['GITHUB_ACTION_REF']} is not the commit being run`);
  process.exit(1);
}
console.log(`self main ran with state ${process.env['STATE_from_pre']}`);
