// Package credentials is the b9 Credentials service: it
// answers lazy-loading snapshotters (CLIP, stargz, soci) that need registry
// credentials long after the pull that made their snapshots.
//
// The CRI image service calls Store.Record after every successful pull.
// Server answers GetCredentials from those records: exactly the credential
// a credential_ref names, else the most recent credential that pulled the
// host/repository, else the node's credentials, else NotFound (or an
// explicit anonymous answer for a public pull). It keeps the *source*
// document, not the minted token, and re-resolves it through the keychain
// on every answer, so an ECR token or a GCP access token is re-minted when
// it nears expiry and a read hours later still works.
//
// Only peers whose SO_PEERCRED uid is 0 (or configured) get answers:
// serve with grpc.Creds(PeerCredentials()). Records survive a restart only
// when a state directory is configured; then the documents are kept in a
// file encrypted with AES-GCM under a node key (see NewStore). Without it
// a restarted plugin answers NotFound for old refs: CLIP falls back to its
// own keychain, and the next pull of the image records again.
//
// Wiring (the plugin's job):
//
//	store, _ := credentials.NewStore(ctx, credentials.StoreConfig{StateDir: cfg.StateDir})
//	srv, _ := credentials.NewServer(credentials.Config{Keychain: kc, Store: store, Detector: det, NodeCredentials: node})
//	g := grpc.NewServer(grpc.Creds(credentials.PeerCredentials()), ...) // the CRI socket's server
//	srv.Register(g)
//	store.SetLiveRefs(listRefsOnSnapshots) // e.g. SnapshotRefs over containerd's snapshotters
//	// after each successful pull, for the image's host:
//	_ = store.Record(cred.Ref, reg, ref.Repository, doc, credentials.InNamespace(podNamespace)) // log the error, never fail the pull
//
// The records are bounded as a whole and per credential source (a pod
// namespace; the node's credentials), so one tenant's flood evicts its own
// records first, and a record whose ref LiveRefs still finds on a snapshot
// is never evicted short of a hard limit.
//
// cred.Ref must be the keychain.Credential.Ref presented to the registry
// (the snapshot label's value): a record whose document resolves to
// another ref is refused at lookup (FailedPrecondition).
package credentials
