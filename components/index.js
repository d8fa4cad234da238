// The package's runtime entry (package.json `main`), loaded by Pulumi's Node.js plugin runner
// (`pulumi package add`) and by `require("ha-lb")`. The sources import each other as `./x.js`
// (TypeScript's nodenext form); the ts-node that the runner registers (Pulumi's vendored 7.0.1)
// cannot map those to `.ts` files, so tsx loads the sources, scoped to this module tree.
// The schema analyzer reads index.ts beside this file (it maps a `.js` main to its `.ts` source).
"use strict";
module.exports = require("tsx/cjs/api").require("./index.ts", __filename);
