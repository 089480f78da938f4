// Rotation and expiry signals. Key Vault secrets cannot carry a rotation policy in a template
// (rotation policies exist for keys only), so expiry is enforced by the `exp` attribute that
// every secret must have (policy in keyvault.bicep), and the vault's Event Grid events tell
// people and automation when to act:
//   SecretNearExpiry (30 days before exp) and SecretExpired -> Azure Monitor alert to an
//   action group that e-mails the platform team;
//   SecretNearExpiry and SecretNewVersionCreated -> an optional rotation function (e.g. one
//   that regenerates the APIM subscription key and writes the new version).
// keyward itself needs no event: it polls the vault every refresh_interval and keeps the
// previous client key for rotation_overlap.
param location string
param vaultName string
param alertEmail string
param rotationFunctionId string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-${vaultName}'
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${vaultName}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'keyward'
    enabled: true
    emailReceivers: [
      {
        name: 'platform-team'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// The Azure Monitor alert destination takes CloudEvents; it is served by the preview API.
resource expiryAlert 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2023-12-15-preview' = if (!empty(alertEmail)) {
  parent: topic
  name: 'secret-expiry-alert'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'MonitorAlert'
      properties: {
        severity: 'Sev2'
        description: 'A secret in ${vaultName} is near expiry or expired. Add a new version: deploy/README.md, "Rotate a key".'
        actionGroups: [
          actionGroup.id
        ]
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
      ]
    }
  }
}

resource rotation 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2023-12-15-preview' = if (!empty(rotationFunctionId)) {
  parent: topic
  name: 'secret-rotation'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: rotationFunctionId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretNewVersionCreated'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output topicName string = topic.name
