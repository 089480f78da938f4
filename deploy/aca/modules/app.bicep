// The Container Apps environment and the keyward app.
//
// One app, one replica = one pod: containers share localhost. keyward is the first container
// and the only one the ingress reaches (targetPort 8080). mcp-backend listens on
// 127.0.0.1:8081 and calls the health API through keyward's egress on 127.0.0.1:8090; it
// has no port in the ingress and no secret in its environment. The collector container
// receives keyward's OTLP (traces and metrics) on 127.0.0.1:4317, the one way keyward's
// metrics reach it; nothing scrapes 127.0.0.1:9090/metrics on Container Apps.
//
// Collector configuration: ../otel-collector.yaml (everything to Application Insights). With
// an Azure Monitor workspace (metricsRemoteWriteUrl set) ../otel-collector.remote-write.yaml
// is merged over it as a second --config: metrics go to the workspace by Prometheus remote
// write, authenticated with the app's identity (AZURE_CLIENT_ID; its role on the workspace's
// data collection rule comes from metrics-ingestion.bicep).
//
// keyward's configuration is not secret but differs per deployment (vault URL, identity,
// APIM host, clients) and keyward reads it from a file. It is rendered here from
// ../keyward.toml and handed to a small init container that writes it to an EmptyDir
// volume mounted at /etc/keyward. Rejected alternatives: an Azure Files share (needs a
// storage account key, i.e. a secret, in the environment), a Container Apps secret volume
// (configuration is not a secret, and would then sit among the real ones), a per-environment
// image layer (the vault URL is only known after provisioning, and a config change would
// need an image build). A change to the configuration is a template change, hence a new
// revision: config changes roll out like code.
//
// Entra ID bearer tokens: with entraAppIdUri set, the configuration gains [ingress.oauth] and
// one [[ingress.clients]] block without a secret per agent (mcpAgents), matched on the token's
// azp (v2) or appid (v1). Without it none of this is rendered: client keys only, as before.
param location string
param nameSuffix string
param tags object
param deployApp bool
param workspaceId string
param infrastructureSubnetId string
param identityId string
param identityClientId string
param registryLoginServer string
param vaultUri string
param appInsightsSecretName string
param apimUpstream string
param mcpClients string
param keywardImage string
param mcpBackendImage string
param configWriterImage string
param otelCollectorImage string
// Prometheus remote write URL of an Azure Monitor workspace (metrics-ingestion.bicep); empty: none.
param metricsRemoteWriteUrl string
param minReplicas int
param maxReplicas int
param concurrentRequests int
param allowedIngressCidrs array
param entraTenantId string
param entraAppIdUri string
param entraAppClientId string
param entraRequiredScopes array
param entraAcceptV1Tokens bool
param mcpResourceUrl string
param mcpAgents array

var appName = 'ca-keyward-${nameSuffix}'
var clientIds = filter(map(split(mcpClients, ','), c => trim(c)), c => !empty(c))
var clientsToml = join(map(clientIds, id => '[[ingress.clients]]\nid = "${id}"\nsecret = "mcp-client-${id}"\n'), '\n')

// [ingress.oauth] and the agents. Lists go through string(): a JSON array of strings is a TOML
// array too. The resource defaults to the app's own MCP endpoint, the app name under the
// environment's default domain (behind a custom domain, pass mcpResourceUrl). Public-cloud
// issuers: v2 tokens carry iss .../<tenant>/v2.0 and azp; v1 tokens iss sts.windows.net and
// appid, and their issuer names the tenant's key set on login.microsoftonline.com (the same
// keys) so that keyward fetches nothing from sts.windows.net.
var oauthEnabled = !empty(entraAppIdUri)
var oauthResource = empty(mcpResourceUrl) ? 'https://${appName}.${environment.properties.defaultDomain}/mcp' : mcpResourceUrl
var oauthAudiences = filter([entraAppIdUri, entraAppClientId], a => !empty(a))
var oauthScopes = map(entraRequiredScopes, s => '${entraAppIdUri}/${s}')
var oauthScopesToml = empty(entraRequiredScopes) ? '' : 'scopes = ${string(oauthScopes)}\n'
var oauthRequiredScopesToml = empty(entraRequiredScopes) ? '' : 'required_scopes = ${string(entraRequiredScopes)}\n'
var oauthV2IssuerToml = '[[ingress.oauth.issuers]]\nissuer = "https://login.microsoftonline.com/${entraTenantId}/v2.0"\naudiences = ${string(oauthAudiences)}\n${oauthRequiredScopesToml}'
var oauthV1IssuerToml = entraAcceptV1Tokens ? '\n[[ingress.oauth.issuers]]\nissuer = "https://sts.windows.net/${entraTenantId}/"\njwks_uri = "https://login.microsoftonline.com/${entraTenantId}/discovery/keys"\naudiences = ${string(oauthAudiences)}\n${oauthRequiredScopesToml}' : ''
var agentsToml = join(map(mcpAgents, agent => '[[ingress.clients]]\nid = "${agent.id}"\ntoken_ids = ${string(agent.appIds)}\n'), '\n')
var oauthToml = oauthEnabled ? '[ingress.oauth]\nresource = "${oauthResource}"\n${oauthScopesToml}\n${oauthV2IssuerToml}${oauthV1IssuerToml}\n${agentsToml}' : ''

var keywardConfig = replace(replace(replace(replace(replace(loadTextContent('../keyward.toml'), '# {{CLIENTS}}', clientsToml), '# {{OAUTH}}', oauthToml), '{{APIM_UPSTREAM}}', apimUpstream), '{{VAULT_URL}}', vaultUri), '{{IDENTITY_CLIENT_ID}}', identityClientId)
var collectorConfig = loadTextContent('../otel-collector.yaml')
var remoteWrite = !empty(metricsRemoteWriteUrl)
var collectorRemoteWriteConfig = loadTextContent('../otel-collector.remote-write.yaml')
// The overlay and what it reads, only with a workspace: the URL of the workspace's
// ingestion endpoint and the identity the token is for. None of them is a secret.
var collectorRemoteWriteEnv = remoteWrite ? [
  {
    name: 'OTELCOL_CONFIG_REMOTE_WRITE'
    value: collectorRemoteWriteConfig
  }
  {
    name: 'AZURE_MONITOR_REMOTE_WRITE_URL'
    value: metricsRemoteWriteUrl
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
] : []

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-${nameSuffix}'
  location: location
  tags: tags
  properties: {
    // Logs go through the diagnostic setting below: no workspace shared key in the template.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    vnetConfiguration: empty(infrastructureSubnetId) ? null : {
      infrastructureSubnetId: infrastructureSubnetId
      internal: false
    }
  }
}

resource environmentDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: environment
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = if (deployApp) {
  name: appName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      maxInactiveRevisions: 5
      ingress: {
        external: true
        targetPort: 8080
        transport: 'auto'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
        ipSecurityRestrictions: [for (cidr, i) in allowedIngressCidrs: {
          name: 'allow-${i}'
          ipAddressRange: cidr
          action: 'Allow'
        }]
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
      // A reference, not a value: the platform reads it from the vault with the identity.
      secrets: [
        {
          name: 'appinsights-connection-string'
          keyVaultUrl: '${vaultUri}secrets/${appInsightsSecretName}'
          identity: identityId
        }
      ]
    }
    template: {
      initContainers: [
        {
          name: 'write-config'
          image: configWriterImage
          command: [
            '/busybox/sh'
            '-c'
            'printf "%s" "$KEYWARD_CONFIG_TOML" > /etc/keyward/keyward.toml'
          ]
          env: [
            {
              name: 'KEYWARD_CONFIG_TOML'
              value: keywardConfig
            }
          ]
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          volumeMounts: [
            {
              volumeName: 'keyward-config'
              mountPath: '/etc/keyward'
            }
          ]
        }
      ]
      containers: [
        {
          // First container: the one the ingress and the probes are about.
          name: 'keyward'
          image: keywardImage
          args: [
            'run'
          ]
          env: [
            {
              name: 'KEYWARD_CONFIG'
              value: '/etc/keyward/keyward.toml'
            }
          ]
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          volumeMounts: [
            {
              volumeName: 'keyward-config'
              mountPath: '/etc/keyward'
            }
          ]
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/livez'
                port: 9090
              }
              initialDelaySeconds: 1
              periodSeconds: 3
              failureThreshold: 10
              timeoutSeconds: 2
            }
            {
              // 200 once every referenced secret is loaded from the vault.
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: 9090
              }
              periodSeconds: 5
              failureThreshold: 3
              successThreshold: 1
              timeoutSeconds: 2
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/livez'
                port: 9090
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 2
            }
          ]
        }
        {
          // No ingress, no probe (loopback is out of the prober's reach), no secret.
          name: 'mcp-backend'
          image: mcpBackendImage
          env: [
            {
              name: 'MCP_BACKEND_LISTEN'
              value: '127.0.0.1:8081'
            }
            {
              name: 'HEALTH_API_URL'
              value: 'http://127.0.0.1:8090/health/'
            }
          ]
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
        }
        {
          name: 'otel-collector'
          image: otelCollectorImage
          // Later --config files are merged over earlier ones.
          args: concat([
            '--config=env:OTELCOL_CONFIG'
          ], remoteWrite ? [
            '--config=env:OTELCOL_CONFIG_REMOTE_WRITE'
          ] : [])
          env: concat([
            {
              name: 'OTELCOL_CONFIG'
              value: collectorConfig
            }
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              secretRef: 'appinsights-connection-string'
            }
          ], collectorRemoteWriteEnv)
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
      volumes: [
        {
          name: 'keyward-config'
          storageType: 'EmptyDir'
        }
      ]
    }
  }
}

output environmentId string = environment.id
output appName string = deployApp ? app.name : ''
output url string = deployApp ? 'https://${app.properties.configuration.ingress.fqdn}' : ''
output mcpResource string = oauthEnabled ? oauthResource : ''
