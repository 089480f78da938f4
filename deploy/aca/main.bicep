// keyward on Azure Container Apps: one app, two containers (keyward owns the ingress,
// mcp-backend sits on loopback behind it), a user-assigned identity that may only read
// secrets of one vault, and telemetry to Log Analytics and Application Insights.
//
// No parameter carries a secret value. Client keys and the APIM subscription key are set
// in the vault by an operator (`az keyvault secret set ... --expires`, deploy/README.md);
// keyward reads them at run time with the identity.
//
// azd: `azd up` from deploy/ (azure.yaml points here). Plain ARM:
//   az deployment sub create -l <region> -f deploy/aca/main.bicep \
//     -p environmentName=<env> apimUpstream=https://<apim>.azure-api.net/biotrackr/ \
//        keywardImage=<registry>/keyward:<tag> mcpBackendImage=<registry>/mcp-backend:<tag>
targetScope = 'subscription'

@minLength(1)
@maxLength(48)
@description('Name of the environment (azd environment name); prefixes the resource group.')
param environmentName string

@minLength(1)
@description('Azure region for every resource.')
param location string

@minLength(12)
@description('The APIM base URL keyward forwards /health/ to, e.g. https://<apim>.azure-api.net/biotrackr/ (https, trailing slash).')
param apimUpstream string

@description('Comma-separated MCP client ids. Each client\'s key is the vault secret mcp-client-<id> (ids: letters, digits and -).')
param mcpClients string = 'claude-desktop'

@description('keyward image (e.g. <registry>.azurecr.io/keyward:<tag>). Empty: the app is not created yet (first azd provision, before the images exist).')
param keywardImage string = ''

@description('mcp-backend image. Empty: the app is not created yet.')
param mcpBackendImage string = ''

@description('Image of the init container that writes keyward.toml to the shared EmptyDir volume; needs /busybox/sh and runs as nonroot.')
param configWriterImage string = 'gcr.io/distroless/static-debian12:debug-nonroot'

// 0.160.0: the contrib distribution has had the azure_auth extension since 0.125.0, and its
// `scopes` option (a token for Azure Monitor, not for the ingestion host) since mid-2025;
// 0.151.0 fixed a flaw in its server side (GHSA-pjv4-3c63-699f, receivers only, unused here).
// ../otel-collector*.yaml use this version's component names and options.
@description('OpenTelemetry Collector (contrib distribution: it has the azuremonitor and prometheus_remote_write exporters and the azure_auth extension). Pin a version, better a digest mirrored into your registry; the collector configuration is written for 0.160.0.')
param otelCollectorImage string = 'otel/opentelemetry-collector-contrib:0.160.0'

@minValue(0)
@maxValue(30)
param minReplicas int = 1

@minValue(1)
@maxValue(300)
param maxReplicas int = 10

@minValue(1)
@description('Concurrent requests per replica before the HTTP scale rule adds a replica (MCP SSE streams count while open).')
param concurrentRequests int = 50

@description('Client address ranges allowed to reach the ingress (CIDR). Empty: any address; keyward still requires a client key or token.')
param allowedIngressCidrs array = []

// Entra ID bearer tokens (ingress.oauth), off unless entraAppIdUri is set. The app
// registrations are not made here: Microsoft Graph resources in Bicep come from an extension
// (Microsoft Graph Bicep: `extension microsoftGraphV1`, its own type versions and a minimum
// Bicep version; in preview until mid-2025), and the deploying principal would need directory
// permissions (Application.ReadWrite.All, AppRoleAssignment.ReadWrite.All) that an Azure
// resource deployment should not hold; registrations also outlive an environment. Register
// the MCP server's app and each agent's with `az ad app create` / `az ad sp create`, grant the
// agents access (deploy/README.md, "Registering an agent with Entra ID"), pass the ids here.
@description('Entra ID tenant whose tokens keyward accepts. Default, and when empty: the tenant of this deployment.')
param entraTenantId string = tenant().tenantId

@description('App ID URI of the MCP server\'s app registration, e.g. api://<app-id>. Empty: no bearer tokens, client keys only.')
param entraAppIdUri string = ''

@description('Application (client) id of the MCP server\'s app registration: the aud of v2 tokens. Empty: only the app ID URI is an accepted audience.')
param entraAppClientId string = ''

@description('Scopes (delegated, scp) or app roles (app-only, roles) every token must carry; advertised as <app ID URI>/<scope>.')
param entraRequiredScopes array = [
  'mcp.tools'
]

@description('Also accept v1 tokens (iss https://sts.windows.net/<tenant>/, appid), for an app registration that does not request v2 tokens.')
param entraAcceptV1Tokens bool = false

@description('Public URL of the MCP endpoint, the RFC 8707 resource keyward announces. Empty: https://<the app\'s FQDN>/mcp.')
param mcpResourceUrl string = ''

@description('Agents that authenticate with Entra ID tokens: [{ id: \'agent-a\', appIds: [\'<agent app (client) id>\'] }]. Each becomes a client without a key; ids must differ from mcpClients. Used only with entraAppIdUri.')
param mcpAgents array = []

@description('Publish Key Vault secret events (near expiry, expired, new version) through Event Grid.')
param secretEvents bool = true

@description('E-mail address alerted (Azure Monitor action group) when a secret is near expiry or expired. Empty: no alert.')
param alertEmail string = ''

@description('Resource id of an Azure Function (…/sites/<app>/functions/<name>) that rotates keys on SecretNearExpiry and reacts to SecretNewVersionCreated. Empty: none.')
param rotationFunctionId string = ''

@description('Resource id of an Azure Monitor workspace (managed Prometheus, Microsoft.Monitor/accounts) that receives keyward\'s metrics. Set: the collector remote-writes them to it (the app\'s identity becomes Monitoring Metrics Publisher on its default data collection rule), and the keyward workbook and the Prometheus alert rules of deploy/monitoring are deployed against it. Empty: none of this; metrics go to Application Insights.')
param monitoringWorkspaceId string = ''

@description('Action group the Prometheus alerts notify. Empty: an e-mail action group for alertEmail (no notification if that is empty too).')
param monitoringActionGroupId string = ''

@allowed([
  'Deny'
  'Audit'
  'Disabled'
])
@description('Effect of the built-in policy "Key Vault secrets should have an expiration date" on this resource group.')
param secretExpiryPolicyEffect string = 'Deny'

@description('Put the environment in a virtual network and reach the vault through a private endpoint; the vault then refuses public network access.')
param privateNetworking bool = false

@description('Expiry (epoch seconds) of the vault secret holding the Application Insights connection string; renewed on every deployment.')
param telemetrySecretExpiry int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P180D'))

param tags object = {}

var allTags = union(tags, { 'azd-env-name': environmentName, workload: 'keyward' })
var nameSuffix = toLower(uniqueString(subscription().id, environmentName, location))
var deployApp = !empty(keywardImage) && !empty(mcpBackendImage)

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    nameSuffix: nameSuffix
    tags: allTags
  }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    name: 'id-keyward-${nameSuffix}'
    tags: allTags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    name: 'kv-${take(nameSuffix, 13)}'
    tags: allTags
    readerPrincipalId: identity.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
    appInsightsName: monitoring.outputs.appInsightsName
    telemetrySecretExpiry: telemetrySecretExpiry
    secretExpiryPolicyEffect: secretExpiryPolicyEffect
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

module secretEventsModule 'modules/secret-events.bicep' = if (secretEvents) {
  name: 'secret-events'
  scope: rg
  params: {
    location: location
    vaultName: keyVault.outputs.name
    alertEmail: alertEmail
    rotationFunctionId: rotationFunctionId
    tags: allTags
  }
}

module prometheusMonitoring 'modules/prometheus-monitoring.bicep' = if (!empty(monitoringWorkspaceId)) {
  name: 'prometheus-monitoring'
  scope: rg
  params: {
    location: location
    nameSuffix: nameSuffix
    tags: allTags
    monitoringWorkspaceId: monitoringWorkspaceId
    actionGroupId: monitoringActionGroupId
    alertEmail: alertEmail
  }
}

// The collector's way into the workspace: its remote write URL, and Monitoring Metrics
// Publisher for the app's identity on the workspace's data collection rule.
module metricsIngestion 'modules/metrics-ingestion.bicep' = if (!empty(monitoringWorkspaceId)) {
  name: 'metrics-ingestion'
  scope: rg
  params: {
    monitoringWorkspaceId: monitoringWorkspaceId
    publisherPrincipalId: identity.outputs.principalId
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    location: location
    name: 'cr${nameSuffix}'
    tags: allTags
    pullerPrincipalId: identity.outputs.principalId
  }
}

module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    location: location
    nameSuffix: nameSuffix
    tags: allTags
    vaultId: keyVault.outputs.id
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    nameSuffix: nameSuffix
    tags: allTags
    deployApp: deployApp
    workspaceId: monitoring.outputs.workspaceId
    infrastructureSubnetId: privateNetworking ? network.outputs.acaSubnetId : ''
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    registryLoginServer: registry.outputs.loginServer
    vaultUri: keyVault.outputs.uri
    appInsightsSecretName: keyVault.outputs.appInsightsSecretName
    apimUpstream: apimUpstream
    mcpClients: mcpClients
    keywardImage: keywardImage
    mcpBackendImage: mcpBackendImage
    configWriterImage: configWriterImage
    otelCollectorImage: otelCollectorImage
    metricsRemoteWriteUrl: !empty(monitoringWorkspaceId) ? metricsIngestion.outputs.remoteWriteUrl : ''
    minReplicas: minReplicas
    maxReplicas: maxReplicas
    concurrentRequests: concurrentRequests
    allowedIngressCidrs: allowedIngressCidrs
    entraTenantId: empty(entraTenantId) ? tenant().tenantId : entraTenantId
    entraAppIdUri: entraAppIdUri
    entraAppClientId: entraAppClientId
    entraRequiredScopes: entraRequiredScopes
    entraAcceptV1Tokens: entraAcceptV1Tokens
    mcpResourceUrl: mcpResourceUrl
    mcpAgents: mcpAgents
  }
}

// Outputs become azd environment values (and variables of azd hooks). None is secret.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output KEYWARD_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output KEYWARD_MCP_CLIENTS string = mcpClients
output KEYWARD_APP_NAME string = app.outputs.appName
output KEYWARD_URL string = app.outputs.url
output KEYWARD_MCP_RESOURCE string = app.outputs.mcpResource
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.workspaceId
