// The workspace's default data collection rule and endpoint, given by id (metrics-ingestion.bicep
// says why this is a module of its own): the remote write URL the collector posts to, and
// Monitoring Metrics Publisher on the rule for the collector's identity.
@description('Resource id of the workspace\'s default data collection rule (Microsoft.Insights/dataCollectionRules).')
param dataCollectionRuleId string

@description('Resource id of the workspace\'s default data collection endpoint (Microsoft.Insights/dataCollectionEndpoints).')
param dataCollectionEndpointId string

@description('Principal (object) id of the identity the collector authenticates as.')
param publisherPrincipalId string

var ruleIdParts = split(dataCollectionRuleId, '/')
var endpointIdParts = split(dataCollectionEndpointId, '/')

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' existing = {
  name: last(ruleIdParts)
  scope: resourceGroup(ruleIdParts[2], ruleIdParts[4])
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' existing = {
  name: last(endpointIdParts)
  scope: resourceGroup(endpointIdParts[2], endpointIdParts[4])
}

// A role assignment is deployed where its target is: the rule's resource group. That group is
// the workspace's, perhaps shared by other deployments: the name is this identity's.
module publisher 'metrics-publisher.bicep' = {
  name: 'keyward-metrics-publisher-${uniqueString(publisherPrincipalId)}'
  scope: resourceGroup(ruleIdParts[2], ruleIdParts[4])
  params: {
    dataCollectionRuleName: last(ruleIdParts)
    principalId: publisherPrincipalId
  }
}

// The endpoint's metrics ingestion URL (a trailing slash dropped), the rule's Prometheus
// stream, and the ingestion API version Azure Monitor documents for remote write.
var metricsIngestion = endpoint.properties.metricsIngestion.endpoint
var ingestionBase = endsWith(metricsIngestion, '/') ? substring(metricsIngestion, 0, length(metricsIngestion) - 1) : metricsIngestion

@description('Prometheus remote write URL: the endpoint\'s metrics ingestion URL and the rule\'s immutable id.')
output remoteWriteUrl string = '${ingestionBase}/dataCollectionRules/${rule.properties.immutableId}/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24'
