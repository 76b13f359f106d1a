package node_test

import (
	"fmt"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/node"
)

type (
	hubConfig  = hub.Config
	nodeConfig = node.Config
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
