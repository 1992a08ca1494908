package pkgtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/dnsguard/dnsguard/policy"
)

// tarEntry is one member of a tar archive as opkg's own reader
// (libbb/unarchive.c) sees it.
type tarEntry struct {
	name     string
	typeflag byte
	mode     int64
	uid, gid int64
	data     []byte
}

// readTar walks a tar stream header by header the way opkg does: every
// header must carry the "ustar" magic and a type opkg knows (regular,
// link, symlink, device, directory, fifo, GNU long name/link). PAX headers
// ('x', 'g'), which Go's archive/tar would hide, are errors here.
func readTar(r io.Reader) ([]tarEntry, error) {
	var (
		out      []tarEntry
		hdr      [512]byte
		longName string
	)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, fmt.Errorf("reading header: %w", err)
		}
		if hdr == [512]byte{} {
			return out, nil // end of archive
		}
		if string(hdr[257:262]) != "ustar" {
			return nil, fmt.Errorf("header without ustar magic: %q", hdr[257:265])
		}
		size, err := octal(hdr[124:136])
		if err != nil {
			return nil, err
		}
		data := make([]byte, size)
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, fmt.Errorf("reading data: %w", err)
		}
		if pad := (512 - size%512) % 512; pad > 0 {
			if _, err := io.CopyN(io.Discard, r, pad); err != nil {
				return nil, err
			}
		}
		e := tarEntry{name: cstring(hdr[0:100]), typeflag: hdr[156], data: data}
		if prefix := cstring(hdr[345:500]); prefix != "" && hdr[257+5] == 0 { // POSIX ustar prefix
			e.name = prefix + "/" + e.name
		}
		switch e.typeflag {
		case 'L':
			longName = cstring(data)
			continue
		case 'K':
			continue
		case 0, '0', '1', '2', '3', '4', '5', '6':
		default:
			return nil, fmt.Errorf("%s: tar type %q, which opkg does not handle", e.name, e.typeflag)
		}
		if longName != "" {
			e.name, longName = longName, ""
		}
		if e.mode, err = octal(hdr[100:108]); err != nil {
			return nil, err
		}
		if e.uid, err = octal(hdr[108:116]); err != nil {
			return nil, err
		}
		if e.gid, err = octal(hdr[116:124]); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func octal(b []byte) (int64, error) {
	s := strings.TrimSpace(cstring(b))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 8, 64)
	if err != nil {
		return 0, fmt.Errorf("bad octal field %q", b)
	}
	return n, nil
}

// readTarGz gunzips and walks a tar.gz.
func readTarGz(b []byte) ([]tarEntry, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return readTar(zr)
}

func gunzipLen(t *testing.T, b []byte) int {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// ipk is an unpacked package.
type ipk struct {
	outer   []tarEntry
	control map[string]tarEntry // by name without "./"
	data    map[string]tarEntry
	dataGz  []byte
}

func openIPK(t *testing.T, path string) *ipk {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := readTarGz(raw)
	if err != nil {
		t.Fatalf("outer archive (opkg wants a gzip'd tar): %v", err)
	}
	p := &ipk{outer: outer, control: map[string]tarEntry{}, data: map[string]tarEntry{}}
	for _, e := range outer {
		var into map[string]tarEntry
		switch strings.TrimPrefix(e.name, "./") {
		case "control.tar.gz":
			into = p.control
		case "data.tar.gz":
			into, p.dataGz = p.data, e.data
		default:
			continue
		}
		inner, err := readTarGz(e.data)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		for _, ie := range inner {
			into[strings.TrimPrefix(ie.name, "./")] = ie
		}
	}
	return p
}

// parseControl reads a control file: "Field: value" lines, continuation
// lines starting with a space.
func parseControl(t *testing.T, b []byte) map[string]string {
	t.Helper()
	fields := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, " ") && last != "" {
			fields[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.ContainsAny(k, " \t") {
			t.Fatalf("control line %q is not 'Field: value'", line)
		}
		if _, dup := fields[k]; dup {
			t.Fatalf("control field %s twice", k)
		}
		fields[k], last = strings.TrimSpace(v), k
	}
	return fields
}

// elfTarget is what the binary of each package architecture must be.
var elfTarget = map[string]struct {
	machine elf.Machine
	class   elf.Class
	order   binary.ByteOrder
	setting string // the Go build setting of the variant (go version -m)
}{
	"mipsle": {elf.EM_MIPS, elf.ELFCLASS32, binary.LittleEndian, "GOMIPS=softfloat"},
	"mips":   {elf.EM_MIPS, elf.ELFCLASS32, binary.BigEndian, "GOMIPS=softfloat"},
	"armv5":  {elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian, "GOARM=5"},
	"armv7":  {elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian, "GOARM=7"},
	"arm64":  {elf.EM_AARCH64, elf.ELFCLASS64, binary.LittleEndian, "GOARM64=v8.0"},
	"amd64":  {elf.EM_X86_64, elf.ELFCLASS64, binary.LittleEndian, "GOAMD64=v1"},
	"386":    {elf.EM_386, elf.ELFCLASS32, binary.LittleEndian, "GO386=sse2"},
}

func TestIPKStructure(t *testing.T) {
	built(t)
	for _, a := range arches {
		t.Run(a.name, func(t *testing.T) {
			p := openIPK(t, ipkPath(a.name))

			var names []string
			for _, e := range p.outer {
				names = append(names, e.name)
				if e.uid != 0 || e.gid != 0 {
					t.Errorf("outer %s owned by %d:%d, want root", e.name, e.uid, e.gid)
				}
			}
			if want := "./debian-binary ./data.tar.gz ./control.tar.gz"; strings.Join(names, " ") != want {
				t.Errorf("outer members %q, want %q (ipkg-build's order)", names, want)
			}
			if got := string(p.outer[0].data); got != "2.0\n" {
				t.Errorf("debian-binary = %q, want 2.0", got)
			}

			ctl, ok := p.control["control"]
			if !ok {
				t.Fatal("control.tar.gz has no ./control")
			}
			f := parseControl(t, ctl.data)
			for _, k := range []string{"Package", "Version", "Depends", "Source", "License", "Section", "Architecture", "Installed-Size", "Description"} {
				if f[k] == "" {
					t.Errorf("control field %s missing or empty", k)
				}
			}
			if f["Package"] != "dnsguard" {
				t.Errorf("Package = %q", f["Package"])
			}
			if f["Version"] != testVersion || !versionRE.MatchString(f["Version"]) {
				t.Errorf("Version = %q, want %q (X.Y.Z-rN, which apk accepts too)", f["Version"], testVersion)
			}
			if f["Architecture"] != a.name {
				t.Errorf("Architecture = %q, want %q", f["Architecture"], a.name)
			}
			if want := strconv.Itoa(gunzipLen(t, p.dataGz)); f["Installed-Size"] != want {
				t.Errorf("Installed-Size = %s, want %s (the uncompressed data tar)", f["Installed-Size"], want)
			}
			if !strings.Contains(f["Depends"], "ca-bundle") {
				t.Errorf("Depends = %q: DoT/DoH needs ca-bundle's roots", f["Depends"])
			}
			if !strings.Contains(f["Depends"], "kmod-nfnetlink-log") {
				t.Errorf("Depends = %q: the table's NFLOG rules need kmod-nfnetlink-log", f["Depends"])
			}
			if f["Require-User"] != "dnsguard=353:dnsguard=353" {
				t.Errorf("Require-User = %q: default_postinst adds the guard's user from it", f["Require-User"])
			}
			if f["License"] != "Apache-2.0" || f["LicenseFiles"] != "LICENSE" {
				t.Errorf("License %q, LicenseFiles %q", f["License"], f["LicenseFiles"])
			}
			if base := filepath.Base(ipkPath(a.name)); base != fmt.Sprintf("%s_%s_%s.ipk", f["Package"], f["Version"], f["Architecture"]) {
				t.Errorf("file name %s does not match the control fields", base)
			}

			// Files and modes.
			for path, mode := range map[string]int64{
				"usr/sbin/dnsguard":                            0o755,
				"etc/init.d/dnsguard":                          0o755,
				"etc/uci-defaults/90-dnsguard":                 0o755,
				"etc/config/dnsguard":                          0o644,
				"etc/uci-defaults/99-dnsguard-restore-dnsmasq": 0o755,
				"lib/upgrade/keep.d/dnsguard":                  0o644,
				"usr/libexec/dnsguard-failsafe":                0o755,
				"etc/capabilities/dnsguard.json":               0o644,
				"etc/hotplug.d/ntp/25-dnsguard":                0o755,
			} {
				e, ok := p.data[path]
				if !ok {
					t.Errorf("data.tar.gz lacks ./%s", path)
					continue
				}
				if e.typeflag != '0' && e.typeflag != 0 {
					t.Errorf("./%s: type %q, want a regular file", path, e.typeflag)
				}
				if e.mode&0o7777 != mode {
					t.Errorf("./%s: mode %o, want %o", path, e.mode&0o7777, mode)
				}
				if e.uid != 0 || e.gid != 0 {
					t.Errorf("./%s owned by %d:%d, want root", path, e.uid, e.gid)
				}
			}

			// conffiles name shipped regular files, the UCI config first.
			cf, ok := p.control["conffiles"]
			if !ok {
				t.Fatal("no conffiles")
			}
			conffiles := strings.Fields(string(cf.data))
			if len(conffiles) == 0 || conffiles[0] != "/etc/config/dnsguard" {
				t.Errorf("conffiles = %q, want /etc/config/dnsguard", conffiles)
			}
			for _, c := range conffiles {
				if e, ok := p.data[strings.TrimPrefix(c, "/")]; !ok || e.typeflag != '0' {
					t.Errorf("conffile %s is not a file the package ships", c)
				}
			}

			// sysupgrade keeps the restore script and /etc/dnsguard.
			keep := strings.Fields(string(p.data["lib/upgrade/keep.d/dnsguard"].data))
			if !slices.Equal(keep, []string{"/etc/uci-defaults/99-dnsguard-restore-dnsmasq", "/etc/dnsguard/"}) {
				t.Errorf("keep.d/dnsguard lists %q", keep)
			}
			if !bytes.Equal(p.data["etc/uci-defaults/99-dnsguard-restore-dnsmasq"].data, p.control["postrm"].data) {
				t.Error("the sysupgrade restore script is not the postrm")
			}

			// The binary is a static executable for this architecture.
			bin := p.data["usr/sbin/dnsguard"]
			ef, err := elf.NewFile(bytes.NewReader(bin.data))
			if err != nil {
				t.Fatalf("usr/sbin/dnsguard: %v", err)
			}
			want := elfTarget[a.variant]
			if ef.Machine != want.machine || ef.Class != want.class || ef.ByteOrder != want.order {
				t.Errorf("binary is %v %v %v, want %v %v %v", ef.Machine, ef.Class, ef.ByteOrder, want.machine, want.class, want.order)
			}
			for _, prog := range ef.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Error("binary has an ELF interpreter: not static")
				}
			}
			if ef.Section(".symtab") != nil {
				t.Error("binary has a symbol table: not stripped")
			}
			bi, err := buildinfo.Read(bytes.NewReader(bin.data))
			if err != nil {
				t.Fatalf("build info: %v", err)
			}
			var settings []string
			for _, st := range bi.Settings {
				settings = append(settings, st.Key+"="+st.Value)
			}
			for _, s := range []string{want.setting, "CGO_ENABLED=0", "-tags=router"} {
				if !slices.Contains(settings, s) {
					t.Errorf("build settings %q lack %s", settings, s)
				}
			}

			// The shipped config is one the daemon reads.
			cfgPath := filepath.Join(t.TempDir(), "dnsguard")
			if err := os.WriteFile(cfgPath, p.data["etc/config/dnsguard"].data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := policy.Load(cfgPath); err != nil {
				t.Errorf("shipped /etc/config/dnsguard: %v", err)
			}
		})
	}
}

// TestIPKScripts checks every shell script in the package (maintainer
// scripts and installed ones): executable, a /bin/sh script, valid for sh -n
// and clean under shellcheck.
func TestIPKScripts(t *testing.T) {
	built(t)
	paths := testenv.Require(t, "shellcheck", "sh")
	shellcheck, sh := paths[0], paths[1]
	p := openIPK(t, ipkPath("mipsel_24kc"))
	scripts := map[string]tarEntry{
		"postinst":                      p.control["postinst"],
		"prerm":                         p.control["prerm"],
		"postrm":                        p.control["postrm"],
		"etc/init.d/dnsguard":           p.data["etc/init.d/dnsguard"],
		"etc/uci-defaults/90-dnsguard":  p.data["etc/uci-defaults/90-dnsguard"],
		"usr/libexec/dnsguard-failsafe": p.data["usr/libexec/dnsguard-failsafe"],
		"etc/hotplug.d/ntp/25-dnsguard": p.data["etc/hotplug.d/ntp/25-dnsguard"],
	}
	dir := t.TempDir()
	for name, e := range scripts {
		t.Run(name, func(t *testing.T) {
			if e.data == nil {
				t.Fatalf("package has no %s", name)
			}
			if e.mode&0o111 != 0o111 {
				t.Errorf("mode %o: not executable", e.mode&0o777)
			}
			if !bytes.HasPrefix(e.data, []byte("#!/bin/sh")) {
				t.Errorf("first line %q: want a /bin/sh script", bytes.SplitN(e.data, []byte("\n"), 2)[0])
			}
			file := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
			if err := os.WriteFile(file, e.data, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sh, "-n", file).CombinedOutput(); err != nil {
				t.Errorf("sh -n: %v\n%s", err, out)
			}
			// The init script is run through /etc/rc.common; its directive
			// says so. Others are plain sh, as busybox ash runs them.
			if out, err := exec.Command(shellcheck, "--shell=dash", file).CombinedOutput(); err != nil {
				t.Errorf("shellcheck: %v\n%s", err, out)
			}
		})
	}
	for _, s := range []string{"postinst", "prerm"} {
		fn := "default_" + s
		if !bytes.Contains(scripts[s].data, []byte(fn+` "$0" "$@"`)) {
			t.Errorf("%s does not hand over to OpenWrt's %s as package-pack.mk's wrapper does", s, fn)
		}
	}
}

// TestFootprint holds the mipsel build to the router's flash budget: the
// package (what flash holds) at most 3.5 MiB, .ipk and .apk, and the
// stripped binary at most 8 MiB (issue 11): net/http, vishvananda/netlink,
// Go's stub resolver and miekg's zone parser are out
// (TestRouterBuildLeavesOut keeps them out), and build-packages.sh turns
// inlining off outside the query path. It fences the Installed-Size opkg
// checks and logs the footprint table of every arch.
//
// opkg (libopkg/opkg_install.c verify_pkg_installable) refuses a package
// whose Installed-Size, rounded up to KiB, is not below the free KiB of
// /overlay (statvfs); Installed-Size is ipkg-build's uncompressed data
// tar, so only a smaller binary lowers it (compressing the package
// changes the .ipk, not Installed-Size).
const (
	binaryTarget = 8 * mib
	binaryFence  = binaryTarget
	packageLimit = 7 * mib / 2
)

func TestFootprint(t *testing.T) {
	built(t)
	t.Logf("build-packages.sh:\n%s", buildLog)
	for _, a := range arches {
		bin, err := os.Stat(binPath(a.name))
		if err != nil {
			t.Fatal(err)
		}
		pkg, err := os.Stat(ipkPath(a.name))
		if err != nil {
			t.Fatal(err)
		}
		p := openIPK(t, ipkPath(a.name))
		isize, _ := strconv.ParseInt(parseControl(t, p.control["control"].data)["Installed-Size"], 10, 64)
		apkSize := "-"
		if st, err := os.Stat(apkPath(a.name)); err == nil {
			apkSize = strconv.FormatInt(st.Size(), 10)
			if a.name == "mipsel_24kc" && st.Size() > packageLimit {
				t.Errorf("mipsel .apk %d bytes, over the 3.5 MiB budget", st.Size())
			}
		}
		// The budget is set for the smallest routers served: mipsel
		// (MT76x8/MT7621) with 16 MiB of flash.
		if a.name == "mipsel_24kc" {
			if bin.Size() > binaryFence {
				t.Errorf("mipsel binary %d bytes (%.2f MiB), over the %.2f MiB fence", bin.Size(), float64(bin.Size())/mib, float64(binaryFence)/mib)
			}
			if bin.Size() > binaryTarget {
				t.Logf("mipsel binary %d bytes: the 8 MiB target is not met (%d over)", bin.Size(), bin.Size()-binaryTarget)
			}
			t.Logf("mipsel binary %d bytes, %d under the %.2f MiB fence; %s", bin.Size(), binaryFence-bin.Size(), float64(binaryFence)/mib, segmentSlack(t, binPath(a.name)))
			// Installed-Size: the binary plus ~60 KiB of scripts, config
			// and tar headers; opkg needs that much free on /overlay.
			if isize-bin.Size() > 64<<10 {
				t.Errorf("Installed-Size %d is %d bytes over the binary: what else grew?", isize, isize-bin.Size())
			}
			if isize > binaryFence+64<<10 {
				t.Errorf("Installed-Size %d (%.2f MiB): opkg would want that free on /overlay", isize, float64(isize)/mib)
			}
			if pkg.Size() > packageLimit {
				t.Errorf("mipsel package %d bytes (%.2f MiB), over the 3.5 MiB budget", pkg.Size(), float64(pkg.Size())/mib)
			}
		}
		if !hasRow(string(buildLog), a.name, bin.Size(), pkg.Size(), apkSize, isize) {
			t.Errorf("footprint table has no row: %s %d ... %d ... %s ... %d", a.name, bin.Size(), pkg.Size(), apkSize, isize)
		}
	}
}

// segmentSlack says how much each loadable segment but the last can grow
// before the next one moves by a whole alignment step (64 KiB on mips):
// the file grows in those steps, so this, not the distance to the budget,
// is how much room there is.
func segmentSlack(t *testing.T, path string) string {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var loads []*elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			loads = append(loads, p)
		}
	}
	var parts []string
	for i, p := range loads[:max(len(loads)-1, 0)] {
		end := p.Vaddr + p.Filesz
		slack := (end+p.Align-1)/p.Align*p.Align - end
		parts = append(parts, fmt.Sprintf("segment %d (%s) can grow %d bytes", i, p.Flags, slack))
	}
	return strings.Join(parts, ", ") + " before the file grows a step"
}

// hasRow reports whether the footprint table has
// "ARCH VARIANT BIN (..) IPK (..) APK (..) INSTALLED-SIZE (..)".
func hasRow(table, arch string, bin, pkg int64, apk string, isize int64) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 10 && f[0] == arch && f[2] == strconv.FormatInt(bin, 10) && f[4] == strconv.FormatInt(pkg, 10) &&
			f[6] == apk && f[8] == strconv.FormatInt(isize, 10) {
			return true
		}
	}
	return false
}
