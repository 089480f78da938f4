#!/bin/sh
# azd postprovision hook (deploy/azure.yaml): build keyward and mcp-backend in the
# environment's registry and roll the Container App to them.
#
# 1. Refuse to go on while a secret keyward names is missing from the vault: keyward would
#    never become ready, and the new revision would never take traffic.
# 2. Build both images with `az acr build` (no local Docker) from `git archive HEAD`: what
#    is deployed is exactly a commit, with no build output or stray files in the context.
# 3. Record the images in the azd environment and provision again: the app is (re)created
#    from aca/main.bicep with both images. The nested run skips this hook.
#
# Needs: az (signed in), azd, git. Reads azd environment values (main.bicep outputs).
set -eu

if [ "${KEYWARD_HOOK_NESTED:-}" = "1" ]; then
    exit 0
fi

: "${AZURE_CONTAINER_REGISTRY_NAME:?missing: run through azd (main.bicep output)}"
: "${AZURE_CONTAINER_REGISTRY_ENDPOINT:?missing: run through azd (main.bicep output)}"
: "${AZURE_KEY_VAULT_NAME:?missing: run through azd (main.bicep output)}"

repo_root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
commit=$(git -C "$repo_root" rev-parse --short=12 HEAD)
tag="git-$commit"
keyward_image="$AZURE_CONTAINER_REGISTRY_ENDPOINT/keyward:$tag"
backend_image="$AZURE_CONTAINER_REGISTRY_ENDPOINT/mcp-backend:$tag"

if [ "${KEYWARD_SKIP_SECRET_CHECK:-}" != "1" ]; then
    # Names only: listing never returns values.
    if ! names=$(az keyvault secret list --vault-name "$AZURE_KEY_VAULT_NAME" --query "[].name" -o tsv); then
        echo "Cannot list the secrets of $AZURE_KEY_VAULT_NAME. Setting them needs a data-plane" >&2
        echo "role on the vault (deploy/README.md, 'Set the secrets'); with private networking," >&2
        echo "run from inside the network or set KEYWARD_SKIP_SECRET_CHECK=1." >&2
        exit 1
    fi
    missing=""
    # Unset: the template's default client; set but empty: no client keys (Entra ID agents only).
    for id in $(printf '%s' "${KEYWARD_MCP_CLIENTS-claude-desktop}" | tr ',' ' '); do
        printf '%s\n' "$names" | grep -qxF "mcp-client-$id" || missing="$missing mcp-client-$id"
    done
    printf '%s\n' "$names" | grep -qxF apim-subscription-key || missing="$missing apim-subscription-key"
    if [ -n "$missing" ]; then
        echo "The vault $AZURE_KEY_VAULT_NAME lacks:$missing" >&2
        echo "Set each (value from a file or stdin, never the command line), then run 'azd provision':" >&2
        for name in $missing; do
            echo "  az keyvault secret set --vault-name $AZURE_KEY_VAULT_NAME --name $name --file <path> --encoding utf-8 --expires <YYYY-MM-DDTHH:MM:SSZ>" >&2
        done
        exit 1
    fi
fi

if [ "${KEYWARD_IMAGE:-}" = "$keyward_image" ] && [ "${MCP_BACKEND_IMAGE:-}" = "$backend_image" ] \
    && [ -n "${KEYWARD_APP_NAME:-}" ]; then
    echo "The app already runs $tag."
    exit 0
fi

if [ -n "$(git -C "$repo_root" status --porcelain --untracked-files=no)" ]; then
    echo "Note: uncommitted changes are not deployed; building commit $commit." >&2
fi

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git -C "$repo_root" archive --format=tar HEAD | tar -x -C "$src"

az acr build --registry "$AZURE_CONTAINER_REGISTRY_NAME" --image "keyward:$tag" \
    --file deploy/docker/keyward.Dockerfile "$src"
az acr build --registry "$AZURE_CONTAINER_REGISTRY_NAME" --image "mcp-backend:$tag" \
    --file deploy/docker/mcp-backend.Dockerfile "$src"

azd env set KEYWARD_IMAGE "$keyward_image"
azd env set MCP_BACKEND_IMAGE "$backend_image"
KEYWARD_HOOK_NESTED=1 azd provision --no-prompt
