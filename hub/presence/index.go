package presence

import "strings"

// The index of each node's devices (bucket hub_node_devices): a key
// <node>.<sn> per device a node holds. A serial number has no '.', so a
// key's node is what precedes its last one.

// IndexKey is the index key of device sn on node.
func IndexKey(node, sn string) string { return node + "." + sn }

// IndexFilter matches every key of node's index.
func IndexFilter(node string) string { return node + ".>" }

// SplitIndexKey returns the node and device of an index key.
func SplitIndexKey(key string) (node, sn string, ok bool) {
	i := strings.LastIndexByte(key, '.')
	if i <= 0 || i == len(key)-1 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}
