package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// State records every host-visible thing Up created, written before the
// thing is created, so Down can undo a partial or crashed Up.
type State struct {
	Name      string     `json:"name"`
	Nodes     int        `json:"nodes"`
	StateDir  string     `json:"stateDir"`
	StartedAt time.Time  `json:"startedAt"`
	Links     []string   `json:"links,omitempty"`
	Routes    [][]string `json:"routes,omitempty"`
	Cgroups   []string   `json:"cgroups,omitempty"`
	Processes []Process  `json:"processes,omitempty"`
	IPTables  []IPTRule  `json:"iptables,omitempty"`
	HostDirs  []string   `json:"hostDirs,omitempty"`

	path string
}

// Process is a daemon the harness started; StartTicks (field 22 of
// /proc/PID/stat) tells a recycled PID from ours.
type Process struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"startTicks"`
	Log        string `json:"log"`
}

// IPTRule is one rule added in the root network namespace.
type IPTRule struct {
	Table string   `json:"table"`
	Chain string   `json:"chain"`
	Spec  []string `json:"spec"`
}

// StatePath is where the recorded state of a cluster lives.
func StatePath(stateDir string) string { return filepath.Join(stateDir, "state.json") }

// LoadState reads the recorded state; os.ErrNotExist when there is none.
func LoadState(stateDir string) (*State, error) {
	p := StatePath(stateDir)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("recorded state %s is corrupt (%w); remove it by hand after checking `ip netns list` and `ps`", p, err)
	}
	s.path = p
	return &s, nil
}

func newState(c Config) *State {
	return &State{Name: c.Name, Nodes: c.Nodes, StateDir: c.StateDir, StartedAt: time.Now().UTC(), path: StatePath(c.StateDir)}
}

// save writes the state atomically.
func (s *State) save() error {
	if s.path == "" {
		return errors.New("state has no path")
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// record runs add on the state and saves it, before the resource exists.
func (s *State) record(add func(*State)) error {
	add(s)
	return s.save()
}

func (s *State) addLink(n string) error {
	return s.record(func(s *State) {
		if !slices.Contains(s.Links, n) {
			s.Links = append(s.Links, n)
		}
	})
}

func (s *State) addRoute(r []string) error {
	return s.record(func(s *State) {
		for _, have := range s.Routes {
			if slices.Equal(have, r) {
				return
			}
		}
		s.Routes = append(s.Routes, r)
	})
}

func (s *State) addCgroup(p string) error {
	return s.record(func(s *State) {
		if !slices.Contains(s.Cgroups, p) {
			s.Cgroups = append(s.Cgroups, p)
		}
	})
}
