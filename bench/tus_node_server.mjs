// @tus/server with @tus/file-store, as their README sets them up: one Node.js process storing
// to a local folder. Run by the benchmark: PORT, DIR and TUS_NODE_DIR (the folder whose
// node_modules holds the packages, bench/.peers/node) come from the environment.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(`${process.env.TUS_NODE_DIR}/`);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

const server = new Server({ path: '/files', datastore: new FileStore({ directory: process.env.DIR }) });
server.listen(Number(process.env.PORT), '127.0.0.1');
