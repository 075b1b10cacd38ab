"""The Linux checks' parsers over text as apt-get, iw, Samba, /etc/group and lsblk print it."""

from __future__ import annotations

import json
from pathlib import Path

from agent.checks import linux

NOW = 1_796_000_000.0
DAY = 86400

APT_SIMULATION = """NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
      Keep also in mind that locking is deactivated,
      so don't depend on the relevance to the real current situation!
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
The following packages have been kept back:
  linux-generic linux-headers-generic linux-image-generic
The following packages will be upgraded:
  libssl3 openssl python3-urllib3 tzdata
4 upgraded, 0 newly installed, 0 to remove and 3 not upgraded.
Inst libssl3 [3.0.2-0ubuntu1.15] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])
Inst openssl [3.0.2-0ubuntu1.15] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])
Inst python3-urllib3 [1.26.5-1~exp1ubuntu0.1] (1.26.5-1~exp1ubuntu0.2 Ubuntu:22.04/jammy-updates [all])
Inst tzdata [2024a-0ubuntu0.22.04] (2024a-0ubuntu0.22.04.1 Ubuntu:22.04/jammy-updates [all])
Conf libssl3 (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])
Conf openssl (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security [amd64])
Conf python3-urllib3 (1.26.5-1~exp1ubuntu0.2 Ubuntu:22.04/jammy-updates [all])
Conf tzdata (2024a-0ubuntu0.22.04.1 Ubuntu:22.04/jammy-updates [all])
"""

APT_UP_TO_DATE = """NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
      Keep also in mind that locking is deactivated,
      so don't depend on the relevance to the real current situation!
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
"""

IW_DEV = """phy#1
\tInterface wlx00c0ca3f5b21
\t\tifindex 5
\t\twdev 0x100000001
\t\taddr 00:c0:ca:3f:5b:21
\t\tssid Year10-Minecraft
\t\ttype AP
\t\tchannel 6 (2437 MHz), width: 20 MHz, center1: 2437 MHz
\t\ttxpower 20.00 dBm
phy#0
\tUnnamed/non-netdev interface
\t\twdev 0x2
\t\taddr 3c:58:c2:91:0e:4d
\t\ttype P2P-device
\tInterface wlp2s0
\t\tifindex 3
\t\twdev 0x1
\t\taddr 3c:58:c2:91:0e:4c
\t\tssid eduroam
\t\ttype managed
\t\tchannel 44 (5220 MHz), width: 80 MHz, center1: 5210 MHz
\t\ttxpower 22.00 dBm
\t\tmulticast TXQ:
\t\t\tqsz-byt\tqsz-pkt\tflows\tdrops\tmarks\toverlmt\thashcol\ttx-bytes\ttx-packets
\t\t\t0\t0\t0\t0\t0\t0\t0\t0\t\t0
"""

SMB_CONF = """#======================= Global Settings =======================
[global]
   workgroup = WORKGROUP
   server string = %h server (Samba, Ubuntu)
   map to guest = bad user
   usershare allow guests = yes

#======================= Share Definitions =======================
;[homes]
;   comment = Home Directories
[printers]
   comment = All Printers
   browseable = no
   path = /var/spool/samba
   printable = yes
[print$]
   comment = Printer Drivers
   path = /var/lib/samba/printers
[Films]
   path = /home/sam/Videos
   guest ok = yes
   read only = no
"""

GROUP = """root:x:0:
sudo:x:27:sam,itadmin
adm:x:4:syslog,sam
wheel:x:10:
admin:x:118:
lpadmin:x:122:sam
sam:x:1000:
itadmin:x:1001:
backup-op:x:1002:
"""

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
sam:x:1000:1000:Sam,,,:/home/sam:/bin/bash
itadmin:x:1001:1001:IT:/home/itadmin:/bin/bash
toor:x:0:0:backdoor:/root:/bin/bash
opsbot:x:1003:118::/home/opsbot:/bin/bash
"""

# `lsblk -J -o NAME,TYPE,RM,HOTPLUG,TRAN,FSTYPE,MOUNTPOINT` with a LUKS USB stick, a plain FAT stick, a stick
# with nothing mounted (flags as "1", as older util-linux prints them) and the internal NVMe disk.
LSBLK = (Path(__file__).resolve().parent.parent / "fixtures" / "agent" / "linux" / "lsblk_removable.json").read_text()


def test_apt_security_upgrades_fail() -> None:
    res = linux.parse_apt_simulation(APT_SIMULATION, NOW - 1 * DAY, NOW)
    assert res.status == "fail"
    assert res.evidence["pending"] == 4 and res.evidence["security_pending"] == 2
    assert res.evidence["security_packages"] == ["libssl3 3.0.2-0ubuntu1.18", "openssl 3.0.2-0ubuntu1.18"]
    assert res.evidence["lists_age_days"] == 1.0


def test_apt_only_non_security_upgrades_pass() -> None:
    text = "\n".join(line for line in APT_SIMULATION.splitlines() if "security" not in line)
    res = linux.parse_apt_simulation(text, NOW - 2 * DAY, NOW)
    assert res.status == "pass" and res.evidence["pending"] == 2 and res.evidence["security_pending"] == 0
    assert linux.parse_apt_simulation(APT_UP_TO_DATE, None).status == "pass"


def test_apt_stale_lists_fail_even_when_nothing_is_pending() -> None:
    res = linux.parse_apt_simulation(APT_UP_TO_DATE, NOW - 30 * DAY, NOW)
    assert res.status == "fail" and "30 days old" in res.evidence["problem"]


def test_iw_dev_finds_the_access_point() -> None:
    assert linux.parse_iw_dev(IW_DEV) == ["wlx00c0ca3f5b21"]
    assert linux.parse_iw_dev(IW_DEV.replace("type AP", "type managed")) == []
    assert linux.parse_iw_dev("") == []


def test_smb_conf_shares() -> None:
    # [homes] is commented out; [global], [printers] and [print$] are not file shares
    assert linux.parse_smb_conf(SMB_CONF) == ["Films"]


def test_admin_accounts() -> None:
    # sudo members, a second uid-0 account, and an account whose primary group is admin
    assert linux.admin_accounts(GROUP, PASSWD) == {"root", "toor", "sam", "itadmin", "opsbot"}
    assert linux.admin_accounts("sudo:x:27:\n", "root:x:0:0::/root:/bin/sh\n") == {"root"}


def test_removable_mounts_luks_stick_and_plain_stick() -> None:
    mounts = linux.removable_mounts(json.loads(LSBLK)["blockdevices"])
    assert mounts == [
        {"device": "luks-5f0c6a8e-2b1d-4c3e-9f8a-7b6c5d4e3f21", "disk": "sda", "mountpoint": "/media/sam/SECURE",
         "encrypted": True, "fstype": "ext4"},
        {"device": "sdb1", "disk": "sdb", "mountpoint": "/media/sam/KINGSTON", "encrypted": False, "fstype": "vfat"},
    ]  # sdc (older lsblk's "1" flags) is plugged in but not mounted; the internal NVMe is not removable
