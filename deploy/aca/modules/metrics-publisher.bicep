// Monitoring Metrics Publisher for the collector's identity on one data collection rule: it may
// send metrics through that rule into its Azure Monitor workspace, and read nothing. Deployed in
// the rule's resource group (metrics-ingestion-rule.bicep).
param dataCollectionRuleName string
param principalId string

// Built-in role "Monitoring Metrics Publisher".
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' existing = {
  name: dataCollectionRuleName
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rule.id, principalId, monitoringMetricsPublisherRoleId)
  scope: rule
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    description: 'the keyward app\'s collector remote-writes its metrics through this rule only'
  }
}

output roleAssignmentId string = publisher.id
