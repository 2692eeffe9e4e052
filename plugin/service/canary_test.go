package service

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/testutil/canarydoc"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// PullImage never answers with a value read from a pod's credential
// document: every planted case of canarydoc goes through the CRI service
// (forward mode, cloud providers on the emulators), whose containerd
// echoes back what it was given as a careless registry might. Every
// PullImage error and everything logged is searched for the canaries in
// every encoding.
func TestPullImageErrorsNeverQuoteADocument(t *testing.T) {
	logs := cloudemu.CaptureLogs(t)
	env := canarydoc.Start(t)
	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		a := r.GetAuth()
		return nil, status.Errorf(codes.Unknown, "401 Unauthorized: registry rejected %s:%s (identity %s)", a.GetUsername(), a.GetPassword(), a.GetIdentityToken())
	}}
	addr := filepath.Join(shortDir(t), "b9", "b9.sock")
	svc, err := New(Config{Address: addr, ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward, RegistryMappings: env.Mappings},
		WithKeychainOptions(env.KeychainOptions...))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cli := runtime.NewImageServiceClient(conn)

	cases := env.Cases()
	byCode := map[codes.Code]int{}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		_, err := cli.PullImage(ctx, pullReq(c.Host+"/team/app:v1", c.Annotations, nil))
		cancel()
		st := status.Convert(err)
		byCode[st.Code()]++
		if form := canarydoc.Find(st.Message()); form != "" {
			t.Errorf("%s: PullImage error shows the planted value (%s):\n%s", c.Name, form, st.Message())
		}
	}
	t.Logf("%d pulls: %v", len(cases), byCode)
	// Both bad documents and forwarded pulls were reached.
	if byCode[codes.InvalidArgument] < 100 || byCode[codes.Unauthenticated]+byCode[codes.Unknown] < 100 {
		t.Errorf("codes %v: the cases no longer reach both the parser and containerd", byCode)
	}
	if form := canarydoc.Find(logs.String()); form != "" {
		t.Errorf("the logs show a planted value (%s)", form)
	}
}
