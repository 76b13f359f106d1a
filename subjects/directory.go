package subjects

// Internal subjects of the device directory: one elected node answers
// listings and summary counts for every node (request/reply). Like
// Takeover, they are the hub's own; backends have no use for them.
const (
	// DirList asks the directory for one page of known devices.
	DirList = "hub.ctl.dir.list"
	// DirSummary asks the directory for the device counts by group and type.
	DirSummary = "hub.ctl.dir.summary"
	// AllDir matches every directory request; the elected node serves it.
	AllDir = "hub.ctl.dir.*"
)

// KVKey is the subject of one key of a KV bucket, as its stream stores it
// (for direct gets of many keys at once).
func KVKey(bucket, key string) (string, error) {
	if err := checkToken("bucket", bucket); err != nil {
		return "", err
	}
	if err := checkToken("key", key); err != nil {
		return "", err
	}
	return KVKeys(bucket) + key, nil
}
