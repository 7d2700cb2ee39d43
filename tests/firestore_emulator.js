// Start the Firestore emulator from npm (@firestore-emulator/server) on the port given as
// the first argument; print "ready <port>" once it listens. FIRESTORE_EMULATOR_MODULE is the
// installed package's folder (tests/servers.py installs it on first use).
const { FirestoreServer } = require(process.env.FIRESTORE_EMULATOR_MODULE);

const port = Number(process.argv[2]);
const server = new FirestoreServer();
server.start(port).then(
  () => console.log(`ready ${port}`),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.stop();
    process.exit(0);
  });
}
