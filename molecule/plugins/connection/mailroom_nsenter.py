# Connection to a systemd-nspawn test instance through nsenter, with a clean
# environment (nothing of the controller's PATH, pip or locale settings leaks
# into the target).
from __future__ import annotations

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

DOCUMENTATION = r"""
name: mailroom_nsenter
short_description: run tasks inside a local systemd-nspawn instance via nsenter
description:
  - Enters the mount, UTS, IPC, network and PID namespaces of the instance's init
    process and runs the command there with an empty environment plus a fixed PATH,
    LANG and HOME, as root.
  - The init PID is read from the instance directory that C(molecule/nspawn.sh)
    maintains, unless given directly.
  - Files are copied by streaming them through the same nsenter call.
options:
  machine:
    description: Instance name (directory below the cache's C(instances/)).
    type: str
    vars:
      - name: mailroom_nspawn_machine
      - name: inventory_hostname
  leader_pid:
    description: PID of the instance's init, overrides the lookup by name.
    type: int
    vars:
      - name: mailroom_nspawn_pid
  cache_dir:
    description: Directory holding the instances, as used by molecule/nspawn.sh.
    type: str
    default: /var/cache/mailroom-molecule
    env:
      - name: MAILROOM_MOLECULE_CACHE
extends_documentation_fragment:
  - connection_pipelining
notes:
  - The remote user is ignored; commands always run as root.
"""

display = Display()

TARGET_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "USER=root",
    "LOGNAME=root",
    "SHELL=/bin/sh",
]


class Connection(ConnectionBase):
    """Local nsenter into a systemd-nspawn instance."""

    transport = "mailroom_nsenter"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pid = None

    def _leader_pid(self):
        pid = self.get_option("leader_pid")
        if not pid:
            machine = self.get_option("machine")
            if not machine:
                raise AnsibleConnectionFailure("mailroom_nsenter: no instance name")
            path = os.path.join(self.get_option("cache_dir"), "instances", machine, "leader.pid")
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError) as e:
                raise AnsibleConnectionFailure(
                    f"mailroom_nsenter: instance {machine} is not running ({to_native(e)})"
                ) from e
        if not os.path.exists(f"/proc/{pid}/ns/mnt"):
            raise AnsibleConnectionFailure(f"mailroom_nsenter: init PID {pid} of the instance is gone")
        return pid

    def _connect(self):
        if not self._connected:
            self._pid = self._leader_pid()
            display.vvv(
                f"ESTABLISH NSENTER CONNECTION TO PID {self._pid}", host=self._play_context.remote_addr
            )
            self._connected = True
        return self

    def _argv(self, argv):
        return [
            "nsenter",
            "--target",
            str(self._pid),
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--root",
            "--wd",
            "--",
            "env",
            "-i",
            *TARGET_ENV,
            *argv,
        ]

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = self._argv(["/bin/sh", "-c", to_text(cmd)])
        display.vvv(f"EXEC {to_text(cmd)}", host=self._play_context.remote_addr)
        p = subprocess.Popen(
            [to_bytes(a) for a in argv],
            stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        stdout, stderr = p.communicate(in_data)
        return p.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._play_context.remote_addr)
        script = f"cat > {shlex.quote(out_path)}"
        try:
            with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as src:
                p = subprocess.Popen(
                    [to_bytes(a) for a in self._argv(["/bin/sh", "-c", script])],
                    stdin=src,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                _, stderr = p.communicate()
        except OSError as e:
            raise AnsibleError(f"failed to transfer {in_path} to {out_path}: {to_native(e)}") from e
        if p.returncode != 0:
            raise AnsibleError(f"failed to transfer {in_path} to {out_path}: {to_native(stderr)}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._play_context.remote_addr)
        try:
            with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
                p = subprocess.Popen(
                    [to_bytes(a) for a in self._argv(["cat", in_path])],
                    stdin=subprocess.DEVNULL,
                    stdout=dst,
                    stderr=subprocess.PIPE,
                )
                _, stderr = p.communicate()
        except OSError as e:
            raise AnsibleError(f"failed to fetch {in_path} to {out_path}: {to_native(e)}") from e
        if p.returncode != 0:
            raise AnsibleError(f"failed to fetch {in_path}: {to_native(stderr)}")

    def close(self):
        self._connected = False
