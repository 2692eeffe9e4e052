package imagecreds_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/beam-cloud/b9-resolver/pkg/imagecreds"
)

// containerRequest is the part of a beta9 ContainerRequest (pkg/types,
// JSON as the scheduler marshals it) that carries registry credentials:
// image_credentials is the workspace secret's value, the
// {"credentials","registry","type"} envelope beta9's MarshalCredentials
// writes.
const containerRequest = `{
  "container_id": "endpoint-7f3a-0001",
  "image_id": "a1b2c3d4",
  "workspace_id": "ws-42",
  "image_credentials": "{\"credentials\":{\"AWS_ACCESS_KEY_ID\":\"AKIAEXAMPLE\",\"AWS_REGION\":\"us-east-1\",\"AWS_SECRET_ACCESS_KEY\":\"wJalrEXAMPLEKEY\"},\"registry\":\"123456789012.dkr.ecr.us-east-1.amazonaws.com\",\"type\":\"aws\"}",
  "build_registry_credentials": "AWS:eyJwYXlsb2FkIjoiZXhhbXBsZSJ9",
  "build_options": {
    "source_image": "ghcr.io/acme/base:1.2",
    "source_image_creds": "acme-bot:ghp_exampletoken"
  }
}`

// request is how a control plane reads those fields.
type request struct {
	ImageCredentials         string `json:"image_credentials"`
	BuildRegistryCredentials string `json:"build_registry_credentials"`
	BuildOptions             struct {
		SourceImage      string `json:"source_image"`
		SourceImageCreds string `json:"source_image_creds"`
	} `json:"build_options"`
}

// nodeRecipient is a node pool's age recipient, as `ctr-b9 keygen` prints it.
const nodeRecipient = "age1prjswwx8kqx2khh9xxexz53p2c3nn3pp6rmxzcxvqaqxu04s43ds5hpwe2"

func ExampleFromContainerRequest() {
	var req request
	if err := json.Unmarshal([]byte(containerRequest), &req); err != nil {
		panic(err)
	}
	ann, err := imagecreds.FromContainerRequest(req.ImageCredentials,
		imagecreds.WithImage("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v3"),
		imagecreds.WithBuildRegistryCredentials("registry.build.internal:5000", req.BuildRegistryCredentials),
		imagecreds.WithSourceImageCredentials(req.BuildOptions.SourceImage, req.BuildOptions.SourceImageCreds),
	)
	if err != nil {
		panic(err)
	}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var doc struct {
			Registry string `json:"registry"`
			Type     string `json:"type"`
		}
		json.Unmarshal([]byte(ann[k]), &doc)
		fmt.Printf("%s: registry %s, type %s\n", k, doc.Registry, doc.Type)
	}
	// Output:
	// b9.beam.cloud/image-credentials: registry 123456789012.dkr.ecr.us-east-1.amazonaws.com, type aws
	// b9.beam.cloud/image-credentials.build-registry: registry registry.build.internal:5000, type basic
	// b9.beam.cloud/image-credentials.source-image: registry ghcr.io, type basic
}

// Sealed for the fleet's nodes and bound to the pod's namespace: what the
// API server, etcd and the sandbox stores keep is ciphertext.
func ExampleFromContainerRequest_sealed() {
	var req request
	json.Unmarshal([]byte(containerRequest), &req)
	ann, err := imagecreds.FromContainerRequest(req.ImageCredentials,
		imagecreds.WithName("runtime"),
		imagecreds.WithSealing([]string{nodeRecipient}, "ws-42", time.Now().Add(24*time.Hour)),
	)
	if err != nil {
		panic(err)
	}
	v := ann["b9.beam.cloud/image-credentials.runtime"]
	fmt.Println(strings.HasPrefix(v, "age:"), strings.Contains(v, "wJalrEXAMPLEKEY"))
	fmt.Println(imagecreds.Validate(v) == nil)
	// Output:
	// true false
	// true
}

func ExampleValidate() {
	// A document with the access key id but not the secret: the node would
	// refuse the pull with this text (InvalidArgument); so does Validate.
	err := imagecreds.Validate(`{"registry":"123456789012.dkr.ecr.us-east-1.amazonaws.com","type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKIAEXAMPLE"}}`,
		imagecreds.WithName("ecr"))
	fmt.Println(err)
	fmt.Println(imagecreds.Validate("robot:s3cret"))
	// Output:
	// credential document annotation b9.beam.cloud/image-credentials.ecr: field credentials.AWS_SECRET_ACCESS_KEY: missing; type aws needs it
	// <nil>
}

func ExampleSeal() {
	v, err := imagecreds.Seal(`{"registry":"ghcr.io","credentials":{"GITHUB_USERNAME":"acme-bot","GITHUB_TOKEN":"ghp_exampletoken"}}`,
		[]string{nodeRecipient}, "ws-42", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(v, "age:"), strings.Contains(v, "ghp_exampletoken"))
	// Another namespace's name, a bad document or no recipient is refused
	// here, before any pod exists.
	_, err = imagecreds.Seal("robot:s3cret", nil, "ws-42", time.Time{})
	fmt.Println(err)
	// Output:
	// true false
	// seal: no recipients: invalid argument
}
