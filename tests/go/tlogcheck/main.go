// Command tlogcheck checks a transparency log of the signing server with Go's
// own golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog: an
// implementation the project did not write (tests/tests/tlog.rs builds it in
// GOPATH mode from the Debian package golang-golang-x-mod-dev).
//
// It reads the checkpoint and the tiles over HTTPS (-url, trusting -ca) or
// from the log's directory (-dir), and checks:
//   - the checkpoint's signature by -vkey (note.Open);
//   - the inclusion of every entry of the entry bundles (tlog.ProveRecord and
//     tlog.CheckRecord, with hashes read through tlog.TileHashReader, which
//     checks every tile against the tree);
//   - with -old FILE, the consistency of that earlier checkpoint with this
//     one (tlog.ProveTree, tlog.CheckTree);
//   - that a changed byte of an entry, and of the checkpoint, is rejected.
//
// It prints "size N" and then every entry, one per line, and exits 0; on any
// failure it prints why on stderr and exits 1. With -save FILE it writes the
// checkpoint it checked there.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type source struct {
	url    string
	dir    string
	client *http.Client
}

func (s *source) get(path string) ([]byte, error) {
	if s.dir != "" {
		return os.ReadFile(filepath.Join(s.dir, filepath.FromSlash(path)))
	}
	resp, err := s.client.Get(s.url + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<24))
}

// c2spPath is Go's tile path without the height element (C2SP tlog-tiles),
// and with "entries" for the data tiles.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

type tiles struct{ src *source }

func (t tiles) Height() int { return height }

func (t tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		b, err := t.src.get(c2spPath(tile))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// open checks a checkpoint note's signature and parses its three lines.
func open(msg []byte, v note.Verifier) (tlog.Tree, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return tlog.Tree{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		return tlog.Tree{}, fmt.Errorf("checkpoint is not for origin %q: %q", v.Name(), n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return tlog.Tree{}, fmt.Errorf("bad tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tlog.Tree{}, fmt.Errorf("bad root hash %q", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return tlog.Tree{N: size, Hash: h}, nil
}

func bundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("truncated entry bundle")
		}
		n := int(b[0])<<8 | int(b[1])
		if len(b) < 2+n {
			return nil, errors.New("truncated entry")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

func run() error {
	vkey := flag.String("vkey", "", "the log's verifier key")
	url := flag.String("url", "", "the log's URL prefix (…/log/)")
	dir := flag.String("dir", "", "the log's directory")
	ca := flag.String("ca", "", "CA certificate (PEM) to trust for -url")
	old := flag.String("old", "", "an earlier checkpoint, to check consistency with")
	save := flag.String("save", "", "write the checked checkpoint here")
	flag.Parse()
	v, err := note.NewVerifier(*vkey)
	if err != nil {
		return err
	}
	src := &source{url: *url, dir: *dir}
	if *url != "" {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(*ca)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("cannot read the CA %s", *ca)
		}
		src.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	msg, err := src.get("checkpoint")
	if err != nil {
		return err
	}
	tree, err := open(msg, v)
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	// A changed checkpoint byte is rejected.
	bad := bytes.Replace(msg, []byte("\n"), []byte("0\n"), 1)
	if _, err := open(bad, v); err == nil {
		return errors.New("a changed checkpoint was accepted")
	}
	hr := tlog.TileHashReader(tree, tiles{src})
	var entries [][]byte
	for n := int64(0); n*256 < tree.N; n++ {
		w := tree.N - n*256
		if w > 256 {
			w = 256
		}
		b, err := src.get(c2spPath(tlog.Tile{H: height, L: -1, N: n, W: int(w)}))
		if err != nil {
			return err
		}
		e, err := bundle(b)
		if err != nil || int64(len(e)) != w {
			return fmt.Errorf("entry bundle %d: %d entries, want %d (%v)", n, len(e), w, err)
		}
		entries = append(entries, e...)
	}
	for i, e := range entries {
		p, err := tlog.ProveRecord(tree.N, int64(i), hr)
		if err != nil {
			return fmt.Errorf("entry %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, int64(i), tlog.RecordHash(e)); err != nil {
			return fmt.Errorf("entry %d is not in the tree: %v", i, err)
		}
		changed := append([]byte{0}, e...)
		changed[len(changed)/2] ^= 1
		changed = changed[1:]
		if tlog.CheckRecord(p, tree.N, tree.Hash, int64(i), tlog.RecordHash(changed)) == nil {
			return fmt.Errorf("entry %d with a changed byte was accepted", i)
		}
	}
	if *old != "" {
		oldMsg, err := os.ReadFile(*old)
		if err != nil {
			return err
		}
		oldTree, err := open(oldMsg, v)
		if err != nil {
			return fmt.Errorf("old checkpoint: %v", err)
		}
		if oldTree.N > tree.N {
			return fmt.Errorf("the log shrank from %d to %d", oldTree.N, tree.N)
		}
		if oldTree.N == 0 {
			// Every tree extends the empty one.
			goto consistent
		}
		p, err := tlog.ProveTree(tree.N, oldTree.N, hr)
		if err != nil {
			return err
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, oldTree.N, oldTree.Hash); err != nil {
			return fmt.Errorf("the old checkpoint (%d) is not consistent with this one (%d): %v", oldTree.N, tree.N, err)
		}
	}
consistent:
	if *save != "" {
		if err := os.WriteFile(*save, msg, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("size %d\n", tree.N)
	for _, e := range entries {
		fmt.Printf("%s\n", e)
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck: %v\n", err)
		os.Exit(1)
	}
}
