"""HTTP transport: the app factory (`lmdock.server.app.create_app`), middleware, error envelopes and
streaming helpers that every protocol folder under `api/` shares."""
