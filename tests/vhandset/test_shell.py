"""The virtual handset's mksh: parsing, expansion, redirection, pipes and process plumbing."""

from __future__ import annotations

import shlex
import threading
import time

import pytest

from vhandset.device import VirtualDevice
from vhandset.interface import STDERR, STDOUT
from vhandset.sh.syntax import ShellSyntaxError, parse


@pytest.fixture
def dev() -> VirtualDevice:
    return VirtualDevice("oneplus-8t")


def out(dev: VirtualDevice, command: str) -> str:
    return dev.run(command).out


# ---- exit codes, as adbutils' shell v1 reads them ---------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("true", 0),
        ("false", 1),
        ("sh -c 'exit 3'", 3),
        ("ls /nonexistent", 1),
        ("nosuchcommand", 127),
        ("grep -q zzz /system/build.prop", 1),
        ("exit 5", 5),
    ],
)
def test_x4exit_suffix_reports_the_status(dev, command, code):
    result = dev.run(f"{command}; echo X4EXIT:$?")
    if command.startswith("exit"):
        assert result.exit_code == code and "X4EXIT" not in result.out
        return
    assert result.out.endswith(f"X4EXIT:{code}\n")
    assert result.exit_code == 0


def test_unknown_command_reads_as_mksh(dev):
    result = dev.run("frobnicate --now")
    assert result.exit_code == 127
    assert result.err == "/system/bin/sh: frobnicate: inaccessible or not found\n"
    assert result.out == ""


def test_a_file_without_x_cannot_run(dev):
    dev.run("echo 'echo hi' > /data/local/tmp/s.sh; chmod 644 /data/local/tmp/s.sh")
    result = dev.run("/data/local/tmp/s.sh")
    assert result.exit_code == 126
    assert "can't execute: Permission denied" in result.err
    dev.run("chmod 755 /data/local/tmp/s.sh")
    assert out(dev, "/data/local/tmp/s.sh") == "hi\n"


def test_syntax_error_is_reported_and_fails(dev):
    result = dev.run("echo 'unterminated")
    assert result.exit_code == 1
    assert "syntax error" in result.err
    with pytest.raises(ShellSyntaxError):
        parse("if true; then echo x")


# ---- quoting and expansion --------------------------------------------------------------------


def test_quoting(dev):
    assert out(dev, "echo 'a  b' \"c $HOME\" \\$HOME 'd\"e' \"f'g\"") == "a  b c / $HOME d\"e f'g\n"
    assert out(dev, 'echo "a\\"b" \'x\\y\'') == 'a"b x\\y\n'
    assert out(dev, "echo a\\ b") == "a b\n"


@pytest.mark.parametrize("argv", [["echo", "a'b", "&", "$(id)", "*"], ["echo", "", "x y", ";|"]])
def test_adbutils_list_quoting_round_trips(dev, argv):
    # adbutils turns argument lists into a command line with shlex.quote
    assert out(dev, " ".join(map(shlex.quote, argv))) == " ".join(argv[1:]) + "\n"


def test_variables_and_defaults(dev):
    assert out(dev, "A=1; B=two; echo $A${B}x ${C:-dflt} ${A:+set} ${#B}") == "1twox dflt set 3\n"
    assert out(dev, 'X="a   b"; echo $X; echo "$X"') == "a b\na   b\n"
    assert out(dev, "V=/a/b/c.txt; echo ${V##*/} ${V%.txt}") == "c.txt /a/b/c\n"


def test_arithmetic_expansion(dev):
    assert out(
        dev, "n=7; echo $((n * 2 + 1)) $(( (n - 1) / 4 )) $((-7 / 2)) $((n % 3)) $((n > 3))"
    ) == ("15 1 -3 1 1\n")
    assert dev.run("echo $((1 +))").exit_code == 1


def test_command_substitution_and_status(dev):
    assert out(dev, "echo sdk=$(getprop ro.build.version.sdk) `echo back`") == "sdk=30 back\n"
    assert out(dev, "x=$(false); echo $?") == "1\n"


def test_positional_parameters_of_sh_c(dev):
    assert out(dev, "sh -c 'echo $0 $1 $#; echo \"$@\"' zero one two") == "zero one 2\none two\n"


def test_glob_expands_against_the_virtual_fs(dev):
    names = out(dev, "echo /system/etc/security/cacerts/*.0").split()
    assert len(names) == 4 and all(n.endswith(".0") for n in names)
    assert out(dev, "echo /nonexistent/*.zz") == "/nonexistent/*.zz\n"
    assert (
        out(dev, "echo '/system/etc/security/cacerts/*.0'") == "/system/etc/security/cacerts/*.0\n"
    )


def test_echo_interprets_escapes_like_mksh(dev):
    assert dev.run("echo 'a\\tb'").stdout == b"a\tb\n"
    assert dev.run("echo -n x").stdout == b"x"
    assert out(dev, "printf '%s=%d\\n' a 1 b 2") == "a=1\nb=2\n"


# ---- control flow -----------------------------------------------------------------------------


def test_and_or_and_sequences(dev):
    assert out(dev, "true && echo a || echo b; false && echo c || echo d") == "a\nd\n"


def test_if_for_while(dev):
    script = """
    for f in one two; do
        if [ "$f" = one ]; then echo first $f; elif [ -d /sdcard ]; then echo dir; else echo no; fi
    done
    n=0
    while [ $n != 3 ]; do n=$(echo $n | tr 012 123); echo n$n; done
    """
    assert out(dev, script) == "first one\ndir\nn1\nn2\nn3\n"


def test_set_e_stops_at_the_first_failure(dev):
    result = dev.run("set -e; echo a; false; echo b")
    assert (result.out, result.exit_code) == ("a\n", 1)
    assert out(dev, "set -e; false || echo ok; if false; then :; fi; echo after") == "ok\nafter\n"


def test_here_document(dev):
    dev.run("X=val; cat > /data/local/tmp/h.txt <<EOF\nx=$X $((1 + 2))\nEOF")
    assert dev.vfs.read("/data/local/tmp/h.txt") == b"x=val 3\n"
    dev.run("cat > /data/local/tmp/q.txt <<'EOF'\nx=$X\nEOF")
    assert dev.vfs.read("/data/local/tmp/q.txt") == b"x=$X\n"


# ---- redirections and pipes -------------------------------------------------------------------


def test_redirections(dev):
    dev.run("echo one > /sdcard/r.txt; echo two >> /sdcard/r.txt")
    assert out(dev, "cat /sdcard/r.txt") == "one\ntwo\n"
    assert dev.run("ls /nope 2>/dev/null").err == ""
    merged = dev.run("ls /nope 2>&1")
    assert merged.err == "" and "No such file or directory" in merged.out
    swapped = dev.run("ls /nope 2>&1 >/sdcard/x.txt")
    assert "No such file" in swapped.out
    assert out(dev, "echo err >&2 2>/dev/null; echo done") == "done\n"


def test_redirection_into_read_only_system_fails(dev):
    result = dev.run("echo x > /system/x.txt; echo X4EXIT:$?")
    assert result.err == "/system/bin/sh: can't create /system/x.txt: Read-only file system\n"
    assert result.out == "X4EXIT:1\n"


def test_pipes(dev):
    assert out(dev, "getprop | grep -c ro.product.model") == "1\n"
    assert out(dev, "pm list packages | head -n 2 | wc -l") == "2\n"
    assert out(dev, "echo a:b:c | cut -d : -f 2,3") == "b:c\n"
    assert out(dev, "printf 'b\\na\\nb\\n' | sort | uniq -c") == "      1 a\n      2 b\n"
    assert out(dev, "getprop ro.build.fingerprint | tr -d '.[:space:]' | cut -c 1-7") == "OnePlus\n"
    assert dev.run("yes | head -n 3").out == "y\ny\ny\n"


def test_pipe_ends_when_the_reader_stops(dev):
    started = time.monotonic()
    result = dev.run("logcat | head -n 1")
    assert result.out == "--------- beginning of main\n"
    assert time.monotonic() - started < 3


def test_stdout_and_stderr_stay_in_order(dev):
    proc = dev.shell("echo 1; echo 2 >&2; echo 3; ls /missing; echo 4")
    chunks = list(proc.chunks())
    assert chunks == [
        (STDOUT, b"1\n"),
        (STDERR, b"2\n"),
        (STDOUT, b"3\n"),
        (STDERR, b"ls: /missing: No such file or directory\n"),
        (STDOUT, b"4\n"),
    ]
    assert proc.exit_code == 0


def test_pty_merges_stderr_and_translates_newlines(dev):
    proc = dev.shell("echo a; echo b >&2", pty=True)
    assert list(proc.chunks()) == [(STDOUT, b"a\r\n"), (STDOUT, b"b\r\n")]


def test_stdin_is_fed_until_closed(dev):
    proc = dev.shell("cat > /data/local/tmp/in.txt; wc -l < /data/local/tmp/in.txt")
    proc.feed_stdin(b"abc\n")
    proc.feed_stdin(b"def\n")
    proc.feed_stdin(b"")
    assert list(proc.chunks()) == [(STDOUT, b"2\n")]
    assert dev.vfs.read("/data/local/tmp/in.txt") == b"abc\ndef\n"


def test_close_ends_a_blocked_command_promptly(dev):
    proc = dev.shell("cat")
    done = threading.Event()
    threading.Thread(target=lambda: (list(proc.chunks()), done.set()), daemon=True).start()
    time.sleep(0.1)
    assert not done.is_set()
    proc.close()
    assert done.wait(1.0)
    assert proc.exit_code == 129


def test_exit_code_is_set_before_chunks_end(dev):
    proc = dev.shell("echo hi; exit 7")
    for _ in proc.chunks():
        pass
    assert proc.exit_code == 7


def test_empty_command_is_refused(dev):
    with pytest.raises(ValueError, match="interactive"):
        dev.shell("")


# ---- toybox utilities on the virtual fs -------------------------------------------------------


def test_file_utilities(dev):
    script = """
    cd /data/local/tmp
    mkdir -p a/b && echo hello > a/b/f.txt && cp a/b/f.txt g.txt && mv g.txt h.txt
    ls a/b; cat h.txt; test -f h.txt && echo file; [ -d a ] && echo dir; [ -e nope ] || echo absent
    sha256sum h.txt; md5sum h.txt
    chmod 600 h.txt; stat -c '%a %U %s %n' h.txt
    rm -r a; ls; pwd
    """
    lines = out(dev, script).splitlines()
    assert lines[:5] == ["f.txt", "hello", "file", "dir", "absent"]
    assert lines[5] == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  h.txt"
    assert lines[6] == "b1946ac92492d2347c6235b4d2611184  h.txt"
    assert lines[7] == "600 shell 6 h.txt"
    assert lines[8:] == ["h.txt", "/data/local/tmp"]


def test_ls_long_format(dev):
    dev.run("echo hi > /data/local/tmp/l.txt")
    line = out(dev, "ls -l /data/local/tmp/l.txt")
    assert line.startswith("-rw-rw-rw- 1 shell shell 3 ")
    assert line.rstrip().endswith(" /data/local/tmp/l.txt")
    assert out(dev, "ls -l /sdcard").rstrip().endswith("/sdcard -> /storage/self/primary")
    listing = out(dev, "ls -la /sdcard/").splitlines()
    assert (
        listing[0].startswith("total ") and listing[1].endswith(" .") and listing[2].endswith(" ..")
    )
    assert out(dev, "ls -Z /system/build.prop") == "u:object_r:system_file:s0 /system/build.prop\n"


def test_which_and_toybox(dev):
    assert (
        out(dev, "which ls getprop pm sh")
        == "/system/bin/ls\n/system/bin/getprop\n/system/bin/pm\n/system/bin/sh\n"
    )
    assert dev.run("which su").exit_code == 1
    assert out(dev, "toybox echo hi") == "hi\n"
    assert "ls" in out(dev, "toybox").split()
    assert out(dev, "readlink /system/bin/ls") == "toybox\n"


def test_permission_errors_match_toybox(dev):
    assert dev.run("ls /data").err == "ls: /data: Permission denied\n"
    assert dev.run("cat /data/misc/user/0/cacerts-added/x").err.endswith("Permission denied\n")
    assert dev.run("mkdir /system/foo").err == "mkdir: '/system/foo': Read-only file system\n"
    assert dev.run("rm /system/build.prop").err == "rm: /system/build.prop: Read-only file system\n"


def test_xargs_runs_commands(dev):
    assert out(dev, "echo a b c | xargs -n1 echo x") == "x a\nx b\nx c\n"


def test_concurrent_shells(dev):
    results: list[str] = []

    def worker(i: int) -> None:
        results.append(dev.run(f"echo {i} > /data/local/tmp/t{i}; cat /data/local/tmp/t{i}").out)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == sorted(f"{i}\n" for i in range(12))
