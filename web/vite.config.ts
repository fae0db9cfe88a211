import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The reference client. `npm run build:web` writes web/dist, which Kiln serves at `/`;
// `npm run dev:web` serves it with hot reload and proxies /graphql (HTTP and graphql-ws)
// to the API that `npm run dev` starts on its default address.
const api = 'http://127.0.0.1:4000';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true },
  server: { proxy: { '/graphql': { target: api, ws: true } } },
});
