// Charts and alerts on keyward's Prometheus metrics in an Azure Monitor workspace (managed
// Prometheus, Microsoft.Monitor/accounts): a shared workbook (../../monitoring/workbook.json,
// PromQL against the workspace) and the alert rules of ../../monitoring/alerts.yaml as a
// Prometheus rule group. main.bicep deploys this only when monitoringWorkspaceId is set.
// (monitoring.bicep next door is Log Analytics and Application Insights.)
//
// The rules come from alerts.azure.json, which render_azure_rules.py writes from alerts.yaml
// (tests/deploy/test_monitoring.py fails when the two disagree): one source for Prometheus,
// prometheus-operator and Azure Monitor. The workspace must receive keyward's metrics under
// their Prometheus names: on Container Apps the collector remote-writes them
// (metrics-ingestion.bicep, ../otel-collector.remote-write.yaml); elsewhere deploy/README.md,
// "Monitoring". The rule group evaluates in the deployment's region; keep the workspace there
// too.
param location string
param nameSuffix string
param tags object

@description('Resource id of the Azure Monitor workspace (…/providers/Microsoft.Monitor/accounts/<name>) holding keyward\'s metrics.')
param monitoringWorkspaceId string

@description('Action group the alerts notify. Empty: an e-mail action group for alertEmail is created; no notification when that is empty too.')
param actionGroupId string = ''

@description('E-mail address alerted when actionGroupId is empty. Empty: the alerts fire in Azure Monitor without a notification.')
param alertEmail string = ''

var rules = loadJsonContent('../../monitoring/alerts.azure.json')

// The workbook picks its workspace from a list (Resource Graph); this deployment's is selected.
var workbookData = replace(loadTextContent('../../monitoring/workbook.json'), '{{AZURE_MONITOR_WORKSPACE_ID}}', toLower(monitoringWorkspaceId))

var ownActionGroup = empty(actionGroupId) && !empty(alertEmail)

resource emailActionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (ownActionGroup) {
  name: 'ag-keyward-alerts-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'kw-alerts'
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

var notify = !empty(actionGroupId) ? [actionGroupId] : (ownActionGroup ? [emailActionGroup.id] : [])
var actions = map(notify, id => { actionGroupId: id })

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, monitoringWorkspaceId, 'keyward-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'keyward'
    category: 'workbook'
    sourceId: toLower(monitoringWorkspaceId)
    serializedData: workbookData
  }
}

// One rule group per group of alerts.yaml, scoped to the workspace; Azure's rule fields are
// alerts.yaml's (expression, for, labels, annotations, severity) plus the actions.
resource ruleGroups 'Microsoft.AlertsManagement/prometheusRuleGroups@2023-03-01' = [for group in rules.groups: {
  name: '${group.name}-${nameSuffix}'
  location: location
  tags: tags
  properties: {
    description: 'keyward alerts (deploy/monitoring/alerts.yaml)'
    scopes: [
      monitoringWorkspaceId
    ]
    enabled: true
    interval: group.interval
    rules: map(group.rules, rule => union(rule, { actions: actions }))
  }
}]

output workbookId string = workbook.id
output ruleGroupNames array = [for (group, i) in rules.groups: ruleGroups[i].name]
