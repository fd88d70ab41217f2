/** Jest runs the TypeScript sources directly (ts-jest, ESM). */
export default {
  testEnvironment: "<rootDir>/test/support/node-realm-environment.cjs",
  extensionsToTreatAsEsm: [".ts"],
  moduleNameMapper: {
    // Sources import siblings as "./x.js" (NodeNext); map them back to the .ts file.
    "^(\\.{1,2}/.*)\\.js$": "$1",
  },
  transform: {
    "^.+\\.ts$": ["ts-jest", { useESM: true, tsconfig: "tsconfig.test.json" }],
  },
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  testTimeout: 120000,
  // Child-process tests run the built CLI: rebuild dist/ first when lib/ is newer.
  globalSetup: "<rootDir>/test/support/global-setup.cjs",
};
