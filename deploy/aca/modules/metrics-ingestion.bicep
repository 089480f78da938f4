// Where the collector container writes keyward's metrics when main.bicep is given an Azure
// Monitor workspace (managed Prometheus): the workspace's default data collection rule and
// endpoint, and Monitoring Metrics Publisher on that rule for the app's identity, so that the
// collector can remote-write with a managed identity token and no key
// (../otel-collector.remote-write.yaml). main.bicep deploys this only with monitoringWorkspaceId.
//
// The workspace names its rule and endpoint (properties.defaultIngestionSettings); both live
// in the resource group Azure made for the workspace (MA_<workspace>_<region>_managed), which
// is not ours. Their ids are known only once the workspace is read, and Bicep wants the name
// and scope of a resource, and the scope of a module, known when a deployment starts (BCP120).
// A module's parameters are, so the ids go one module down (metrics-ingestion-rule.bicep),
// which reads the rule and the endpoint and grants the role one more module down
// (metrics-publisher.bicep, deployed in the rule's resource group).
//
// The deploying principal needs read access to the workspace and its managed resource group,
// and may assign roles on the rule there (Owner, User Access Administrator or Role Based
// Access Control Administrator).
@description('Resource id of the Azure Monitor workspace (…/providers/Microsoft.Monitor/accounts/<name>).')
param monitoringWorkspaceId string

@description('Principal (object) id of the identity the collector authenticates as.')
param publisherPrincipalId string

var workspaceIdParts = split(monitoringWorkspaceId, '/')

resource workspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: last(workspaceIdParts)
  scope: resourceGroup(workspaceIdParts[2], workspaceIdParts[4])
}

module rule 'metrics-ingestion-rule.bicep' = {
  name: 'metrics-ingestion-rule'
  params: {
    dataCollectionRuleId: workspace.properties.defaultIngestionSettings.dataCollectionRuleResourceId
    dataCollectionEndpointId: workspace.properties.defaultIngestionSettings.dataCollectionEndpointResourceId
    publisherPrincipalId: publisherPrincipalId
  }
}

@description('Prometheus remote write URL of the workspace (no credential in it).')
output remoteWriteUrl string = rule.outputs.remoteWriteUrl
