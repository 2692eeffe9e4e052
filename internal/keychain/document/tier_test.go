package document

import "testing"

// A pod's documents outrank the node's in Select whatever the list order,
// even a node document naming the host over a pod's naming none; and the
// tier is part of Identity, so the two never share a cache entry.
func TestSelectPutsNodeDocumentsLast(t *testing.T) {
	parse := func(source, text string) Document {
		d, err := Parse(source, text, "")
		if err != nil {
			t.Fatal(err)
		}
		return d[0]
	}
	node := parse("node", `{"registry":"gcr.io","type":"gcp"}`)
	node.Node = true
	pod := parse("pod", "robot:pw")
	for _, docs := range [][]Document{{node, pod}, {pod, node}} {
		if d, ok := Select(docs, "gcr.io"); !ok || d.Source != "pod" {
			t.Errorf("Select picked %q, want the pod's document", d.Source)
		}
	}
	if d, ok := Select([]Document{node}, "gcr.io"); !ok || d.Source != "node" {
		t.Errorf("Select without a pod document picked %q, want the node's", d.Source)
	}
	same := node
	same.Node = false
	if same.Identity() == node.Identity() {
		t.Error("a node document and a pod document with the same keys share an identity")
	}
}
