"""HTTP transport kit the protocol folders under `api/` share: middleware, error envelopes, SSE and
streaming helpers, metrics, and the web app's static files. The app itself is put together in
`lmdock.app` (the composition root), which sits above every layer."""
