package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The scripts ask modelfs itself for candidates (urfave/cli's
// --generate-bash-completion), so they stay right as commands change.
const bashCompletion = `# modelfs bash completion: source <(modelfs completion bash)
_modelfs() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o default -F _modelfs modelfs
`

const zshCompletion = `# modelfs zsh completion: source <(modelfs completion zsh)
autoload -U +X bashcompinit && bashcompinit
` + bashCompletion

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Print(bashCompletion)
			case "zsh":
				fmt.Print(zshCompletion)
			default:
				return usagef("completion: want bash or zsh, got %q", c.Args().First())
			}
			return nil
		},
	}
}
