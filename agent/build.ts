// Placeholder replaced by the bundle builder (issue 5).
console.log("build: nothing to bundle yet");
