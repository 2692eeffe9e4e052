// Package remotehosts gives a containerd remote snapshotter (stargz,
// soci, or any that builds a docker resolver per layer) registry hosts
// whose credentials come from the b9 Credentials service, asked per host
// at each auth challenge, so a lazy read hours after the pull gets a
// freshly minted token instead of the one captured at pull time.
//
// Build Options from the snapshot's labels (FromLabels): the
// containerd.io/snapshot/b9.credential-ref label pins the credential that
// pulled the layer; containerd.io/snapshot/cri.image-ref gives the
// repository for the "most recent pull" rule when there is no ref.
package remotehosts
