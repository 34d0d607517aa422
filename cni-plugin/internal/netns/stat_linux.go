package netns

import (
	"os"
	"syscall"
)

// keyOfInfo is the namespace key of a stat result of an nsfs file.
func keyOfInfo(fi os.FileInfo) Key {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Key{}
	}
	return Key{Dev: uint64(st.Dev), Ino: st.Ino}
}
