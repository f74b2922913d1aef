# bash completion for rpi-provision(1)
# Installed as share/bash-completion/completions/rpi-provision (loaded on demand by
# bash-completion). Subcommands and options follow the man page.

_rpi_provision_devices() {
  # Whole disks only: /dev/sdX and /dev/mmcblkN, not their partitions.
  local d
  for d in /dev/sd[a-z] /dev/sd[a-z][a-z] /dev/mmcblk[0-9] /dev/mmcblk[0-9][0-9]; do
    [[ -b $d ]] && printf '%s\n' "$d"
  done
}

# Appends each output line of the command "$@" (a compgen call) to COMPREPLY, so
# file names with spaces stay whole.
_rpi_provision_add() {
  local line
  while IFS= read -r line; do
    COMPREPLY+=("$line")
  done < <("$@")
}

# Files matching a glob, plus directories to descend into.
_rpi_provision_files() {
  # The pattern may be an extglob one (@(a|b)); the user's setting is restored.
  local extglob
  extglob=$(shopt -p extglob)
  shopt -s extglob
  _rpi_provision_add compgen -f -X "!$1" -- "$cur"
  eval "$extglob"
  _rpi_provision_add compgen -d -- "$cur"
  compopt -o filenames 2>/dev/null
}

_rpi_provision() {
  COMPREPLY=()
  local cur prev words cword
  if declare -F _init_completion >/dev/null; then
    _init_completion || return
  else
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi

  local commands="check apkovl fetch cache devices watch inspect"
  local common="--json -q --quiet -v --verbose -h --help"
  local build="--spec --apkovl --image --tarball --sha256 --first --seed-file"
  local download="--mirror --cache-dir --offline --ca-cert --verify-signature --keyring --signing-key-fingerprint"
  local write="--device -y --yes --allow-non-removable --allow-large --unmount --no-verify --wipe"

  # The subcommand is the first word that is not an option or an option's value.
  local cmd="" sub="" i w
  for ((i = 1; i < cword; i++)); do
    w=${words[i]}
    case $w in
      --spec | --apkovl | --image | --tarball | --sha256 | --mirror | --cache-dir | --size | --host | --first | \
        --device | --output | -o | --bmap | --out-dir | --known-hosts | --version | --arch | --label | --disk-id | --seed-file | \
        --ca-cert | --keyring | --signing-key-fingerprint | --keep | --state | -j | --jobs | --count)
        # `fetch --version V` takes a value; the top-level --version does not.
        [[ $w == --version && -z $cmd ]] || ((i++))
        ;;
      -*) ;;
      *)
        if [[ -z $cmd ]]; then
          cmd=$w
        elif [[ $cmd == cache && -z $sub ]]; then
          sub=$w
        fi
        ;;
    esac
  done

  # Values of options.
  case $prev in
    --spec)
      _rpi_provision_files '*.toml'
      return
      ;;
    --apkovl)
      _rpi_provision_files '*.apkovl.tar.gz*'
      return
      ;;
    --image | --output | -o)
      if [[ $cmd == apkovl ]]; then
        _rpi_provision_files '*.apkovl.tar.gz'
      else
        _rpi_provision_files '*.img?(.gz|.xz|.zst|.bz2)'
      fi
      return
      ;;
    --bmap)
      _rpi_provision_files '*.bmap'
      return
      ;;
    --ca-cert)
      _rpi_provision_files '*.pem'
      return
      ;;
    --keyring)
      _rpi_provision_files '*.asc'
      return
      ;;
    --tarball)
      _rpi_provision_files '*.tar.gz'
      return
      ;;
    --known-hosts | --seed-file | --state)
      _rpi_provision_add compgen -f -- "$cur"
      compopt -o filenames 2>/dev/null
      return
      ;;
    --cache-dir | --out-dir)
      _rpi_provision_add compgen -d -- "$cur"
      compopt -o filenames 2>/dev/null
      return
      ;;
    --device)
      _rpi_provision_add compgen -W "$(_rpi_provision_devices)" -- "$cur"
      return
      ;;
    --arch)
      _rpi_provision_add compgen -W "aarch64 armv7 armhf" -- "$cur"
      return
      ;;
    --version)
      if [[ $cmd == fetch ]]; then
        _rpi_provision_add compgen -W "latest-stable edge" -- "$cur"
        return
      fi
      ;;
    --size)
      _rpi_provision_add compgen -W "512MiB 1GiB 2GiB 4GiB" -- "$cur"
      return
      ;;
    --label)
      _rpi_provision_add compgen -W "ALPINE" -- "$cur"
      return
      ;;
    --sha256 | --mirror | --host | --first | --signing-key-fingerprint | --keep | -j | --jobs | --count | --disk-id)
      return
      ;;
  esac

  local opts
  case $cmd in
    "")
      if [[ $cur != -* ]]; then
        _rpi_provision_add compgen -W "$commands" -- "$cur"
        return
      fi
      opts="$common --version $build $download $write -j --jobs -o --output --bmap --size --label --disk-id --force"
      opts+=" --known-hosts"
      opts+=" --host --dry-run"
      ;;
    check) opts="$common --spec --host --first --packages --mirror --cache-dir --offline --ca-cert" ;;
    apkovl) opts="$common --spec -o --output --out-dir --host --first --seed-file --known-hosts --mirror" ;;
    fetch)
      opts="$common --spec --version --arch --tarball --sha256 --list --all $download"
      ;;
    cache)
      if [[ -z $sub && $cur != -* ]]; then
        _rpi_provision_add compgen -W "list prune" -- "$cur"
        return
      fi
      opts="$common --cache-dir"
      [[ $sub == prune ]] && opts+=" --keep"
      ;;
    devices) opts=$common ;;
    watch)
      opts="$common $build $download -y --yes --allow-non-removable --allow-large --unmount --no-verify --wipe --count --poll"
      opts+=" --size --label --known-hosts --state --dry-run"
      ;;
    inspect)
      if [[ $cur != -* ]]; then
        _rpi_provision_add compgen -f -- "$cur"
        _rpi_provision_add compgen -W "$(_rpi_provision_devices)" -- "$cur"
        compopt -o filenames 2>/dev/null
        return
      fi
      opts="$common"
      ;;
    *) opts=$common ;;
  esac
  _rpi_provision_add compgen -W "$opts" -- "$cur"
}

complete -F _rpi_provision rpi-provision
