// The vault that holds keyward's secrets, and the only grant on it: Key Vault Secrets User
// (read secret values) for keyward's identity, scoped to this vault.
//
// Secrets are not created here. A template that PUT an empty or placeholder secret would
// add a new current version on every deployment and knock out the real key; the operator
// sets each value once with `az keyvault secret set --expires ...` (deploy/README.md), and
// the policy below refuses secrets without an expiry. The one secret written here is the
// Application Insights connection string, copied from the component (never a parameter),
// so that the collector container reads it through a Key Vault reference.
param location string
param name string
param tags object
param readerPrincipalId string
param workspaceId string
param appInsightsName string
param telemetrySecretExpiry int

@allowed([
  'Deny'
  'Audit'
  'Disabled'
])
param secretExpiryPolicyEffect string

@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string

// Built-in role "Key Vault Secrets User": get secret values and metadata, nothing else.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Built-in policy "Key Vault secrets should have an expiration date".
var secretsExpiryPolicyId = '98728c90-32c7-4049-8429-847dc0f4fe37'
var appInsightsSecretName = 'appinsights-connection-string'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC only: no access policies, every grant is a role assignment at a scope.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // A deleted vault or secret cannot be purged before the retention ends, not even by an
    // owner: a compromised admin account cannot destroy the keys for good.
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
  }
}

// Every data-plane access (who read which secret, when, from where) into Log Analytics
// (table AZKVAuditLogs).
resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
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

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    description: 'keyward reads its client keys and upstream credentials from this vault only'
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appInsightsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: appInsightsSecretName
  properties: {
    value: appInsights.properties.ConnectionString
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: telemetrySecretExpiry
    }
  }
}

resource secretsExpiryPolicy 'Microsoft.Authorization/policyAssignments@2022-06-01' = if (secretExpiryPolicyEffect != 'Disabled') {
  name: 'kv-secrets-need-expiry'
  properties: {
    displayName: 'Key Vault secrets should have an expiration date (keyward)'
    policyDefinitionId: tenantResourceId('Microsoft.Authorization/policyDefinitions', secretsExpiryPolicyId)
    parameters: {
      effect: {
        value: secretExpiryPolicyEffect
      }
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
output appInsightsSecretName string = appInsightsSecret.name
