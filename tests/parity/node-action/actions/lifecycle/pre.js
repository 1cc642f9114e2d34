const label = process.env['INPUT_LABEL'];
console.log(`pre ran for ${label}`);
